"""Open a chunk of sealed profiles and turn it into transformed columns (runs in worker processes too).

Kept free of the ORM so a spawned worker imports little: a worker reads its chunks' sealed rows through a
plain DBAPI connection (``fetch_and_decrypt``). Decrypted plaintext lives only inside ``decrypt_chunk``; what
leaves it is already generalized, except raw numbers of quantile features, whose cut points need the whole
population.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.json as pajson

from dataspace.emission.specs import FeatureSpec, _category
from dataspace.emission.transforms import apply_local, pseudonym_digests, raw_type
from dataspace.keystore import KeyStoreSpec
from dataspace.vault import DecryptionError, Vault, open_store

# One vault per key store in each worker process: its epoch-key cache outlives a chunk.
_worker_vaults: dict[KeyStoreSpec, Vault] = {}


@dataclass(frozen=True)
class ChunkJob:
    key_store: KeyStoreSpec  # names the store; epoch keys never travel to workers in a message
    partner_key: bytes
    scope: str
    specs: tuple[FeatureSpec, ...]
    data_types: tuple[str, ...]

    def __repr__(self) -> str:  # keys must never reach a log line
        return f"ChunkJob(features={len(self.specs)})"


@dataclass
class ChunkResult:
    subject_ids: npt.NDArray[np.int64]
    digests: bytes  # PSEUDONYM_BYTES per kept row, in row order
    columns: list[pa.Array]
    unreadable: int


def _coerce(value: Any, data_type: str) -> Any:
    """Slow path: a value of an unexpected JSON type becomes null instead of failing the job."""
    if value is None:
        return None
    if data_type in ("integer", "number"):
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if data_type == "boolean":
        return value if isinstance(value, bool) else None
    return _category(value) if isinstance(value, str | int | float | bool) else None


def _parse(plaintexts: list[bytes], keys: Sequence[str], data_types: Sequence[str]) -> list[pa.Array]:
    if not plaintexts:
        return [pa.array([], raw_type(t)) for t in data_types]
    if len(plaintexts) <= _SMALL_CHUNK:
        return _parse_rows(plaintexts, keys, data_types)
    schema = pa.schema([(k, raw_type(t)) for k, t in zip(keys, data_types, strict=True)])
    try:
        # Arrow's JSON reader parses the whole chunk in C++ (compact JSON holds no raw newline). The block holds
        # the whole chunk, and no more: a fixed 64 MiB block costs milliseconds for a single profile (real-time
        # decisions emit one subject).
        data = b"\n".join(plaintexts)
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(block_size=min(1 << 26, max(1 << 12, len(data) + 1)), use_threads=False),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        return [table.column(k).combine_chunks() for k in keys]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _parse_rows(plaintexts, keys, data_types)


# Up to this many profiles, Python's JSON parser is cheaper than setting up Arrow's reader (about 2 ms, most of a
# real-time decision's CPU, which emits one subject). Both give the same values: Arrow's reader refuses a value of
# an unexpected type and the chunk then takes this path anyway.
_SMALL_CHUNK = 16


def _parse_rows(plaintexts: list[bytes], keys: Sequence[str], data_types: Sequence[str]) -> list[pa.Array]:
    rows = [json.loads(p) for p in plaintexts]
    return [pa.array([_coerce(r.get(k), t) for r in rows], raw_type(t)) for k, t in zip(keys, data_types, strict=True)]


def decrypt_chunk(
    job: ChunkJob,
    subject_ids: npt.NDArray[np.int64],
    epochs: list[int],
    wrapped: list[bytes],
    sealed: list[bytes],
    *,
    vault: Vault | None = None,
) -> ChunkResult:
    """Open, parse and locally transform one chunk; ``vault`` defaults to one on the job's key store."""
    if vault is None:
        vault = _worker_vaults.get(job.key_store) or _worker_vaults.setdefault(job.key_store, open_store(job.key_store))
    plaintexts: list[bytes] = []
    ok = np.ones(len(wrapped), dtype=np.bool_)
    sids = subject_ids.tolist()
    open_ = Vault.open
    for i, (sid, dek, s) in enumerate(zip(sids, vault.unwrap_all(sids, epochs, wrapped), sealed, strict=True)):
        if dek is None:
            ok[i] = False  # tampered, shredded or retired mid-flight: skip the row, count it
            continue
        try:
            plaintexts.append(open_(dek, s, sid))
        except DecryptionError:
            ok[i] = False
    ids = subject_ids[ok]
    keys = [s.field for s in job.specs]
    raw = _parse(plaintexts, keys, job.data_types)
    del plaintexts
    columns = [apply_local(s, r, t) for s, r, t in zip(job.specs, raw, job.data_types, strict=True)]
    return ChunkResult(
        subject_ids=ids,
        digests=b"".join(pseudonym_digests(job.partner_key, job.scope, ids)),
        columns=columns,
        unreadable=int((~ok).sum()),
    )


# --- reading sealed rows (in this process, or in a worker from its own connection) --------------------
FETCH_SQL = (
    "SELECT k.subject_id, k.epoch, k.wrapped_key, p.sealed FROM subject_keys k"
    " JOIN subject_profiles p ON p.subject_id = k.subject_id WHERE {where} ORDER BY k.subject_id"
)
IN_LIST_CHUNK = 2_000


def fetch_sealed(
    dbapi: Any, paramstyle: str, ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], list[int], list[bytes], list[bytes]]:
    """Sealed rows for these (sorted, distinct) subject ids, in id order, through a DBAPI connection whose
    SQLAlchemy dialect has that paramstyle (``?`` placeholders for ``qmark``, ``%s`` otherwise); ids without a
    profile are absent. The driver's cursor directly: ORM/Core row processing would cost more than the
    decryption."""
    mark = "?" if paramstyle == "qmark" else "%s"
    cursor = dbapi.cursor()
    try:
        lo, hi = int(ids[0]), int(ids[-1])
        if hi - lo + 1 <= 2 * ids.size:
            # Dense ids: one range scan, then keep only the eligible ones.
            cursor.execute(FETCH_SQL.format(where=f"k.subject_id BETWEEN {mark} AND {mark}"), (lo, hi))
            rows = cursor.fetchall()
        else:
            rows = []
            for start in range(0, ids.size, IN_LIST_CHUNK):
                part = ids[start : start + IN_LIST_CHUNK].tolist()
                marks = ", ".join([mark] * len(part))
                cursor.execute(FETCH_SQL.format(where=f"k.subject_id IN ({marks})"), part)
                rows += cursor.fetchall()
    finally:
        cursor.close()
    if not rows:
        return np.empty(0, dtype=np.int64), [], [], []
    sids, epochs, wrapped, sealed = zip(*rows, strict=True)  # both drivers return bytea/BLOB as bytes
    del rows
    found = np.array(sids, dtype=np.int64)
    pos = np.searchsorted(ids, found).clip(0, ids.size - 1)
    wanted = ids[pos] == found
    if wanted.all():
        return found, list(epochs), list(wrapped), list(sealed)
    keep = np.flatnonzero(wanted).tolist()
    return found[wanted], [epochs[i] for i in keep], [wrapped[i] for i in keep], [sealed[i] for i in keep]


# One database connection per database in each worker process (it outlives a chunk, like the vaults above).
_worker_connections: dict[str, tuple[Any, str]] = {}


def fetch_and_decrypt(job: ChunkJob, database_url: str, subject_ids: npt.NDArray[np.int64]) -> ChunkResult:
    """In a worker: read this chunk's sealed rows from the database itself, then ``decrypt_chunk``. The
    process that plans the emission sends 8 bytes per subject instead of every sealed row, and reads nothing
    itself. Each read ends its transaction at once (nothing held open between chunks)."""
    found = _worker_connections.get(database_url)
    if found is None:
        from sqlalchemy import create_engine  # the worker's first chunk only
        from sqlalchemy.pool import NullPool

        engine = create_engine(database_url, poolclass=NullPool)
        found = _worker_connections.setdefault(database_url, (engine.raw_connection(), engine.dialect.paramstyle))
    dbapi, paramstyle = found
    try:
        rows = fetch_sealed(dbapi, paramstyle, subject_ids)
        dbapi.rollback()
    except Exception:
        _worker_connections.pop(database_url, None)  # a broken connection: the next chunk opens a new one
        with contextlib.suppress(Exception):
            dbapi.close()
        raise
    return decrypt_chunk(job, *rows)
