"""Feature emission: eligible subjects' sealed profiles in, desensitized Arrow record batches out.

Two passes over the population, because quantile cut points and k-anonymity need all of it: pass one
streams sealed rows from the database in chunks, opens them (in worker processes for large populations)
and keeps only generalized columns as compact integer codes; pass two suppresses small groups and emits
record batches decoded from the codes. Rows leave in pseudonym order, which is random to the partner and
so reveals nothing about subject ids or enrollment order.

What is emitted: the ``pseudonym`` column (HMAC under the partner's own key, see ``pseudonym_digests``)
and one column per contract feature. The pseudonym -> subject id map stays server-side in
``Emission.pseudonym_to_subject`` for storing decisions; it is never part of a batch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.catalog.models import Field
from dataspace.catalog.promise import declared
from dataspace.emission._decrypt import ChunkJob, ChunkResult, decrypt_chunk, fetch_and_decrypt, fetch_sealed
from dataspace.emission.specs import (
    PSEUDONYM_COLUMN,
    Bin,
    CatalogField,
    FeatureSpec,
    Group,
    Quantile,
    check_against_catalog,
    column_name,
    promised_values,
)
from dataspace.emission.transforms import (
    PSEUDONYM_BYTES,
    encode,
    k_suppress,
    output_type,
    quantile_edges,
    quantile_index,
)
from dataspace.errors import InvalidInput
from dataspace.keys import KeyRing
from dataspace.subjects.ids import ascending_distinct
from dataspace.vault import Vault
from policies.transforms import Coarseness

LOAD_CHUNK = 25_000  # rows per decryption task
PARALLEL_MIN_ROWS = 100_000  # below this, worker start-up costs more than it saves
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass(frozen=True)
class EmissionStats:
    eligible: int  # distinct subject ids asked for
    loaded: int  # of those, with a readable profile (erased subjects have none)
    unreadable: int  # profiles that failed to open (tampered); skipped
    emitted: int
    suppressed_rows: int  # dropped by k-anonymity
    suppressed_cells: int  # blanked (null) by k-anonymity in emitted rows

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PseudonymMap:
    """Server-side only: which subject each emitted pseudonym stands for (sorted by pseudonym)."""

    pseudonyms: npt.NDArray[np.bytes_]  # ASCII hex, dtype S32
    subject_ids: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.subject_ids.size)

    def lookup(self, pseudonyms: Sequence[str]) -> npt.NDArray[np.int64]:
        """Subject ids for the given pseudonyms; -1 for a pseudonym this emission did not produce."""
        wanted = np.array([p.encode("ascii", "replace")[:64] for p in pseudonyms], dtype="S64")
        if not len(self) or not wanted.size:
            return np.full(wanted.size, -1, dtype=np.int64)
        pos = np.searchsorted(self.pseudonyms, wanted).clip(0, len(self) - 1)
        found = self.pseudonyms[pos] == wanted
        return np.where(found, self.subject_ids[pos], -1).astype(np.int64)


@dataclass
class Emission:
    schema: pa.Schema
    pseudonym_to_subject: PseudonymMap
    stats: EmissionStats
    batch_size: int
    _pseudonyms: pa.Array = field(repr=False)
    _codes: list[npt.NDArray[np.int32]] = field(repr=False)
    _decoders: list[pa.Array] = field(repr=False)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The emitted rows as record batches of at most ``batch_size`` rows (may be called again)."""
        n = len(self._pseudonyms)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            arrays = [self._pseudonyms.slice(start, stop - start)]
            arrays += [
                dec.take(pa.array(codes[start:stop])) for codes, dec in zip(self._codes, self._decoders, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def to_table(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)


def catalog_fields(session: Session, keys: Sequence[str]) -> dict[str, CatalogField]:
    rows = session.execute(select(Field).where(Field.key.in_(sorted(set(keys))))).scalars()
    return {f.key: _catalog_field(f) for f in rows}


def _catalog_field(f: Field) -> CatalogField:
    constraints = f.constraints or {}
    enum = constraints.get("enum")
    return CatalogField(
        key=f.key,
        data_type=f.data_type,
        transforms={name: Coarseness.from_json(limits) for name, limits in declared(f.transforms).items()},
        status=f.status,
        minimum=constraints.get("min"),
        maximum=constraints.get("max"),
        enum=tuple(str(v) for v in enum) if isinstance(enum, list) else None,
    )


def _schema(specs: Sequence[FeatureSpec], fields: dict[str, CatalogField], k: int) -> pa.Schema:
    columns = [pa.field(PSEUDONYM_COLUMN, pa.string(), nullable=False)]
    for spec in specs:
        meta = {"field": spec.field, "transform": spec.transform}
        if isinstance(spec, Bin | Group):
            meta["labels"] = json.dumps(spec.labels())
        if isinstance(spec, Quantile):
            meta["q"] = str(spec.q)
        columns.append(pa.field(column_name(spec), output_type(spec, fields[spec.field].data_type), metadata=meta))
    return pa.schema(columns, metadata={"k": str(k), "suppressed": "null"})


def _fetch(
    session: Session, ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], list[int], list[bytes], list[bytes]]:
    """Sealed rows for these (sorted, distinct) subject ids, in id order, in the session's transaction."""
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None
    return fetch_sealed(dbapi, session.connection().dialect.paramstyle, ids)


def _worker_url(session: Session) -> str | None:
    """The database's URL for decrypt workers to read sealed rows from themselves; None for a database only
    this process can open (SQLite in memory), whose rows this process reads and sends."""
    url = session.connection().engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return url.render_as_string(hide_password=False)


def _chunk_job(
    vault: Vault,
    keys: KeyRing,
    partner_key: str,
    *,
    scope: str,
    specs: Sequence[FeatureSpec],
    fields: Mapping[str, CatalogField],
) -> ChunkJob:
    """What a decryption task needs: the key store's name, the partner's pseudonym key, the features."""
    return ChunkJob(
        key_store=vault.spec(),
        partner_key=keys.partner_pseudonym_key(partner_key),
        scope=scope,
        specs=tuple(specs),
        data_types=tuple(fields[s.field].data_type for s in specs),
    )


def _default_workers() -> int:
    return min(2, os.cpu_count() or 1)


class DecryptPool:
    """Decryption worker processes shared by the emissions of one job run in this process (its plan's cut
    points, then each shard): spawning the workers and loading epoch keys into them is paid once per job,
    not once per shard. Workers start on first use (a job too small for them starts none) and stop when the
    ``with`` block ends. Each worker still trusts an epoch key for at most ``vault.CACHE_SECONDS``."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or _default_workers()
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # Spawned (not forked) workers: forking a process that holds database connections and threads
            # is unsafe.
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> DecryptPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunk_results(
    session: Session,
    vault: Vault,
    job: ChunkJob,
    ids: npt.NDArray[np.int64],
    workers: int,
    *,
    pool: DecryptPool | None = None,
) -> Iterator[ChunkResult]:
    chunks = (ids[i : i + LOAD_CHUNK] for i in range(0, ids.size, LOAD_CHUNK))
    if workers <= 1:
        for chunk in chunks:
            yield decrypt_chunk(job, *_fetch(session, chunk), vault=vault)
        return
    own = pool is None
    pool = DecryptPool(workers) if pool is None else pool
    executor = pool.executor()
    # At most 2 chunks per worker are in flight, which bounds memory. Workers read their chunks' sealed rows
    # themselves (rows committed since this session's snapshot may show; an erased subject's are gone).
    url = _worker_url(session)
    pending: deque[Future[ChunkResult]] = deque()
    try:
        for chunk in chunks:
            if url is not None:
                pending.append(executor.submit(fetch_and_decrypt, job, url, chunk))
            else:
                pending.append(executor.submit(decrypt_chunk, job, *_fetch(session, chunk)))
            while len(pending) >= 2 * pool.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # stopped early (an error): a shared pool must not keep decrypting for us
            future.cancel()
        if own:
            pool.close()


def _hex(digests: npt.NDArray[np.uint8]) -> pa.Array:
    """Lower-case hex of each fixed-width digest row, as an Arrow string array (no Python loop)."""
    n = digests.shape[0]
    width = 2 * PSEUDONYM_BYTES
    out = np.empty((n, width), dtype=np.uint8)
    out[:, 0::2] = _HEX[digests >> 4]
    out[:, 1::2] = _HEX[digests & 15]
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


def emit(
    session: Session,
    vault: Vault,
    keys: KeyRing,
    *,
    partner_key: str,
    features: Sequence[FeatureSpec],
    k: int,
    eligible_subject_ids: npt.ArrayLike,
    batch_size: int = 65536,
    pseudonym_scope: str = "",
    workers: int | None = None,
    quantile_cuts: Mapping[str, Sequence[float]] | None = None,
    catalog: Mapping[str, CatalogField] | None = None,
    pool: DecryptPool | None = None,
) -> Emission:
    """Desensitized features of the eligible subjects for one partner.

    ``eligible_subject_ids`` must already be the subjects with an active grant for every contract field
    for this partner and purpose (the bulk consent evaluator's output). ``pseudonym_scope`` salts the
    pseudonyms: the same subject gets the same pseudonym for the same partner and scope; pass a job id to
    keep one partner from linking its jobs' outputs. ``workers`` decrypts in that many processes (default:
    up to 2 CPUs when the population is large). ``vault`` opens profiles in this process; worker processes
    open the same key store (``vault.spec()``). ``quantile_cuts`` fixes the inner cut points of quantile features
    (by column name, as ``quantile_cut_points`` computes them over a whole population) instead of computing
    them over the subjects given: a job split into shards bins every shard with the same cut points.
    ``catalog`` passes the features' catalog fields (``catalog_fields``) read earlier in the same state, for a
    caller that emits one subject many times (real-time decisions); they are still checked against the specs.
    ``pool``: decrypt workers shared with other emissions (``DecryptPool``) rather than started for this one.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput("k must be a positive integer")
    if batch_size < 1:
        raise InvalidInput("batch_size must be positive")
    specs = list(features)
    if not specs:
        raise InvalidInput("at least one feature is required")
    names = [column_name(s) for s in specs]
    if PSEUDONYM_COLUMN in names or len(set(names)) != len(names):
        raise InvalidInput("feature column names must be unique and not 'pseudonym'")
    fields = dict(catalog) if catalog is not None else catalog_fields(session, [s.field for s in specs])
    check_against_catalog(specs, fields)
    schema = _schema(specs, fields, k)

    ids = ascending_distinct(eligible_subject_ids)
    if workers is None:
        workers = (pool.workers if pool is not None else _default_workers()) if ids.size >= PARALLEL_MIN_ROWS else 1
    job = _chunk_job(vault, keys, partner_key, scope=pseudonym_scope, specs=specs, fields=fields)

    subject_parts: list[npt.NDArray[np.int64]] = []
    digest_parts: list[bytes] = []
    column_parts: list[list[pa.Array]] = [[] for _ in specs]
    unreadable = 0
    if ids.size:
        for result in _chunk_results(session, vault, job, ids, workers, pool=pool):
            subject_parts.append(result.subject_ids)
            digest_parts.append(result.digests)
            for j, col in enumerate(result.columns):
                column_parts[j].append(col)
            unreadable += result.unreadable

    subject_ids = np.concatenate(subject_parts) if subject_parts else np.empty(0, dtype=np.int64)
    digests = np.frombuffer(b"".join(digest_parts), dtype=np.uint8).reshape(-1, PSEUDONYM_BYTES)
    del digest_parts
    n = subject_ids.size

    codes: list[npt.NDArray[np.int32]] = []
    decoders: list[pa.Array] = []
    for spec, parts in zip(specs, column_parts, strict=True):
        out_type = output_type(spec, fields[spec.field].data_type)
        column = pa.concat_arrays(parts) if parts else pa.array([], out_type)
        parts.clear()
        c, d = encode(_finish(spec, column, out_type, quantile_cuts))
        _refuse_beyond_promise(spec, fields[spec.field], len(d) - 1)  # the decoder: null, then each distinct value
        codes.append(c)
        decoders.append(d)
        del column

    suppression = k_suppress(codes, k)
    # Emit in pseudonym order: random-looking to the partner, and lets the map use binary search.
    order = np.flatnonzero(suppression.keep)
    halves = digests[order].copy().view(">u8")
    order = order[np.lexsort((halves[:, 1], halves[:, 0]))]
    del halves
    codes = [c[order] for c in codes]
    pseudonyms = _hex(digests[order])
    mapping = PseudonymMap(
        pseudonyms=np.frombuffer(pseudonyms.buffers()[2], dtype="S32", count=len(pseudonyms)).copy(),
        subject_ids=subject_ids[order],
    )
    stats = EmissionStats(
        eligible=int(ids.size),
        loaded=int(n),
        unreadable=unreadable,
        emitted=int(order.size),
        suppressed_rows=suppression.suppressed_rows,
        suppressed_cells=suppression.suppressed_cells,
    )
    return Emission(
        schema=schema,
        pseudonym_to_subject=mapping,
        stats=stats,
        batch_size=batch_size,
        _pseudonyms=pseudonyms,
        _codes=codes,
        _decoders=decoders,
    )


def _finish(
    spec: FeatureSpec, column: pa.Array, out_type: pa.DataType, quantile_cuts: Mapping[str, Sequence[float]] | None
) -> pa.Array:
    """A feature's column as emitted, from its locally transformed one: quantile features binned by the given
    cut points (or, without them, by this population's own), every column cast to its output type."""
    if isinstance(spec, Quantile):
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        name = column_name(spec)
        edges = (
            np.asarray(quantile_cuts[name], dtype=np.float64)
            if quantile_cuts is not None and name in quantile_cuts
            else quantile_edges(values, spec.q)
        )
        column = pa.array(quantile_index(values, edges), from_pandas=True)
    return column.cast(out_type)


def emit_one(
    session: Session,
    vault: Vault,
    keys: KeyRing,
    *,
    partner_key: str,
    features: Sequence[FeatureSpec],
    subject_id: int,
    pseudonym_scope: str,
    quantile_cuts: Mapping[str, Sequence[float]],
    catalog: Mapping[str, CatalogField],
) -> tuple[str, list[Any]] | None:
    """One subject's desensitized features, as ``emit`` with ``k=1`` gives them for that subject alone: (the
    pseudonym, the feature values in ``features`` order), or None without a readable profile. For real-time
    decisions, where one consenting customer's row goes to the partner's sandbox and never out of it: the same
    fetch, decryption, transforms, cut points, casts and promise check, without the population machinery
    (k-anonymity does nothing at k=1, and one row needs no ordering). Quantile features need ``quantile_cuts``
    (a population's, from ``quantile_cut_points``): one subject has no quantiles of its own; and since one row
    cannot show by its values that cut points are finer than the field's promise, the bins they make are
    counted against it instead."""
    specs = list(features)
    fields = dict(catalog)
    check_against_catalog(specs, fields)
    for spec in specs:  # one row cannot show too-fine cut points by its values: count the bins they make
        if isinstance(spec, Quantile):
            name = column_name(spec)
            cuts = quantile_cuts.get(name)
            if cuts is None:
                raise InvalidInput(f"one subject's quantile feature {name!r} needs the population's cut points")
            _refuse_beyond_promise(spec, fields[spec.field], len(cuts) + 1)
    found = _fetch(session, np.array([subject_id], dtype=np.int64))
    if not found[0].size:
        return None
    job = _chunk_job(vault, keys, partner_key, scope=pseudonym_scope, specs=specs, fields=fields)
    result = decrypt_chunk(job, *found, vault=vault)
    if not result.subject_ids.size:
        return None  # unreadable (tampered, or its key retired mid-flight)
    values: list[Any] = []
    for spec, column in zip(specs, result.columns, strict=True):
        field = fields[spec.field]
        value = _finish(spec, column, output_type(spec, field.data_type), quantile_cuts)[0].as_py()
        _refuse_beyond_promise(spec, field, 0 if value is None else 1)  # what one row can show
        values.append(value)
    return result.digests[:PSEUDONYM_BYTES].hex(), values


def _refuse_beyond_promise(spec: FeatureSpec, field: CatalogField, distinct: int) -> None:
    """Defence in depth behind ``check_against_catalog``: the distinct values an emission really produced
    against the field's promise; emit nothing if they exceed it. The message carries no count: the partner
    must not learn one from a refusal."""
    allowed = promised_values(spec, field)
    if allowed is not None and distinct > allowed:
        raise InvalidInput(
            f"feature {column_name(spec)!r} would send more distinct values of field {spec.field!r} than the "
            "catalog promises; nothing was emitted"
        )


def quantile_cut_points(
    session: Session,
    vault: Vault,
    keys: KeyRing,
    *,
    partner_key: str,
    features: Sequence[FeatureSpec],
    subject_ids: npt.ArrayLike,
    workers: int | None = None,
    pool: DecryptPool | None = None,
) -> dict[str, list[float]]:
    """Inner cut points of every quantile feature over these subjects (by column name), for ``emit``'s
    ``quantile_cuts``. Opens only these subjects' profiles and keeps only the quantile features' numbers
    (``pool`` as for ``emit``)."""
    specs = [s for s in features if isinstance(s, Quantile)]
    if not specs:
        return {}
    fields = catalog_fields(session, [s.field for s in specs])
    check_against_catalog(specs, fields)
    ids = ascending_distinct(subject_ids)
    if workers is None:
        workers = (pool.workers if pool is not None else _default_workers()) if ids.size >= PARALLEL_MIN_ROWS else 1
    job = _chunk_job(vault, keys, partner_key, scope="", specs=specs, fields=fields)
    parts: list[list[pa.Array]] = [[] for _ in specs]
    if ids.size:
        for result in _chunk_results(session, vault, job, ids, workers, pool=pool):
            for j, col in enumerate(result.columns):
                parts[j].append(col)
    cuts: dict[str, list[float]] = {}
    for spec, cols in zip(specs, parts, strict=True):
        column = pa.concat_arrays(cols) if cols else pa.array([], pa.float64())
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        cuts[column_name(spec)] = [float(x) for x in quantile_edges(values, spec.q)]
    return cuts
