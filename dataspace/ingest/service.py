"""Ingest: validate rows against the catalog, seal each subject's values, store good rows per batch.

A batch is one transaction: its good rows are all stored or none are. Rejected rows are reported with their
row number (1-based, counting data rows, header excluded) and every reason; they never touch the database.
Unknown or retired columns reject the whole file before anything is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.catalog.models import Field
from dataspace.db import Database
from dataspace.errors import InvalidInput, RowError
from dataspace.ingest.validate import FieldRule, validate_column
from dataspace.keys import KeyRing
from dataspace.principal import SYSTEM, Principal
from dataspace.subjects.store import store_profiles
from dataspace.vault import Vault

DEFAULT_ID_COLUMN = "customer_id"
MAX_ID_LENGTH = 128


@dataclass
class IngestReport:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self, max_errors: int = 1000) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "created": self.created,
            "updated": self.updated,
            "seconds": round(self.seconds, 3),
            "errors": [e.as_dict() for e in self.errors[:max_errors]],
            "error_count": len(self.errors),
        }


def field_rules(session: Session, columns: list[str], id_column: str) -> dict[str, FieldRule]:
    """The catalog rule for every data column; unknown or retired columns reject the file."""
    if id_column not in columns:
        raise InvalidInput(f"missing the id column {id_column!r}")
    data_columns = [c for c in columns if c != id_column]
    if not data_columns:
        raise InvalidInput("no data columns besides the id column")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise InvalidInput(f"duplicate column(s): {', '.join(dupes)}")
    fields = {f.key: f for f in session.scalars(select(Field).where(Field.key.in_(data_columns)))}
    unknown = [c for c in data_columns if c not in fields]
    if unknown:
        raise InvalidInput(f"column(s) not in the catalog: {', '.join(unknown)}")
    retired = [c for c in data_columns if fields[c].status != "active"]
    if retired:
        raise InvalidInput(f"column(s) are retired fields and take no new data: {', '.join(retired)}")
    return {c: FieldRule(c, fields[c].data_type, dict(fields[c].constraints or {})) for c in data_columns}


def validate_batch(
    batch: pa.RecordBatch | pa.Table,
    rules: dict[str, FieldRule],
    id_column: str,
    row_offset: int,
    seen_ids: dict[str, int],
) -> tuple[list[tuple[str, dict[str, Any]]], list[RowError]]:
    """Return the good rows as ``(external_ref, values)`` and the row errors of the bad ones."""
    n = batch.num_rows
    bad = np.zeros(n, dtype=bool)
    per_row: dict[int, list[RowError]] = {}

    def add(i: int, column: str | None, reason: str) -> None:
        per_row.setdefault(i, []).append(RowError(row_offset + i + 1, column, reason))

    ids_col = batch.column(id_column)
    ids_str = pc.utf8_trim_whitespace(pc.cast(ids_col, pa.string()))
    ids = ids_str.to_pylist()
    for i, ref in enumerate(ids):
        if not ref:
            add(i, id_column, "missing customer id")
            bad[i] = True
        elif len(ref) > MAX_ID_LENGTH:
            add(i, id_column, f"customer id longer than {MAX_ID_LENGTH} characters")
            bad[i] = True
        elif ref in seen_ids:
            add(i, id_column, f"duplicate customer id (first at row {seen_ids[ref]})")
            bad[i] = True
        else:
            seen_ids[ref] = row_offset + i + 1
    typed: dict[str, list[Any]] = {}
    for key, rule in rules.items():
        result = validate_column(rule, batch.column(key))
        for i, reason in result.reasons.items():
            add(i, key, reason)
        bad |= result.invalid
        typed[key] = result.values.to_pylist()
    good_idx = np.flatnonzero(~bad)
    keys = list(rules)
    columns = [typed[k] for k in keys]
    good: list[tuple[str, dict[str, Any]]] = []
    for i in good_idx.tolist():
        values = {k: col[i] for k, col in zip(keys, columns, strict=True) if col[i] is not None}
        good.append((ids[i], values))
    for i in np.flatnonzero(bad).tolist():
        if ids[i] and seen_ids.get(ids[i]) == row_offset + i + 1:
            del seen_ids[ids[i]]  # a rejected row does not claim its id
    errors = [e for i in sorted(per_row) for e in per_row[i]]
    return good, errors


def read_batches(path: Path, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
    """Stream a CSV or Parquet file as record batches (CSV columns read as strings)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise InvalidInput(f"file not found: {path}")
    try:
        if suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
            return
        if suffix not in (".csv", ".txt"):
            raise InvalidInput(f"unsupported file type {suffix!r}; use .csv or .parquet")
        header = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=8 << 20),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
            ),
        )
        for batch in reader:
            yield from (batch.slice(i, batch_rows) for i in range(0, batch.num_rows, batch_rows))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"cannot read {path.name}: {str(exc).splitlines()[0]}") from exc


def ingest_batches(
    db: Database,
    keys: KeyRing,
    vault: Vault,
    batches: Iterator[pa.RecordBatch] | list[pa.RecordBatch],
    *,
    id_column: str = DEFAULT_ID_COLUMN,
    actor: Principal = SYSTEM,
    progress: Callable[[int], None] | None = None,
    source: str = "upload",
) -> IngestReport:
    """Validate and store batches; each batch's good rows commit together."""
    report = IngestReport()
    start = time.perf_counter()
    seen: dict[str, int] = {}
    rules: dict[str, FieldRule] | None = None
    for batch in batches:
        if rules is None:
            with db.session() as session:
                rules = field_rules(session, list(batch.schema.names), id_column)
        good, errors = validate_batch(batch, rules, id_column, report.rows, seen)
        with db.transaction() as session:
            counts = store_profiles(session, vault, good, keys.blind_index) if good else {"created": 0, "updated": 0}
            record_event(
                session,
                actor=actor,
                action="ingest.batch",
                target=f"ingest:{source}",
                details={
                    "rows": batch.num_rows,
                    "accepted": len(good),
                    "rejected": batch.num_rows - len(good),
                    "columns": sorted(rules),
                },
            )
        report.rows += batch.num_rows
        report.accepted += len(good)
        report.rejected += batch.num_rows - len(good)
        report.created += counts["created"]
        report.updated += counts["updated"]
        report.errors.extend(errors)
        if progress is not None:
            progress(batch.num_rows)
    if rules is None:
        raise InvalidInput("the file holds no rows")
    report.seconds = time.perf_counter() - start
    return report


def ingest_file(
    db: Database,
    keys: KeyRing,
    vault: Vault,
    path: Path,
    *,
    id_column: str = DEFAULT_ID_COLUMN,
    batch_rows: int = 100_000,
    actor: Principal = SYSTEM,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    return ingest_batches(
        db,
        keys,
        vault,
        read_batches(path, batch_rows),
        id_column=id_column,
        actor=actor,
        progress=progress,
        source=path.name,
    )


def ingest_rows(
    db: Database,
    keys: KeyRing,
    vault: Vault,
    rows: list[dict[str, Any]],
    *,
    id_column: str = DEFAULT_ID_COLUMN,
    actor: Principal = SYSTEM,
) -> IngestReport:
    """The HTTP bulk path: a list of JSON objects, one per customer, validated as one batch."""
    if not rows:
        raise InvalidInput("no rows given")
    columns: list[str] = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise InvalidInput(f"row {n}: expected an object")
        nested = [k for k, v in row.items() if isinstance(v, (dict, list))]
        if nested:
            raise InvalidInput(f"row {n}: nested values are not allowed ({', '.join(nested)})")
        for k in row:
            if k not in columns:
                columns.append(k)
    table = pa.table({c: pa.array([_cell(r.get(c)) for r in rows], pa.string()) for c in columns})
    return ingest_batches(
        db, keys, vault, table.to_batches(max_chunksize=len(rows)) or [], id_column=id_column, actor=actor
    )


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
