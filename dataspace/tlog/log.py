"""The database-backed log: queue entries in the caller's transaction, sequence them in batches, sign
checkpoints, and answer inclusion and consistency proofs from stored subtree hashes.

Appending only inserts a queued row (no shared row is touched, so concurrent writers never wait on each
other). ``sequence`` moves queued rows to consecutive indexes under the per-log head lock, one transaction
per batch, and signs a checkpoint for the new size: a crash at any point loses nothing committed and
sequences nothing twice.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

from sqlalchemy import CursorResult, Pool, Table, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataspace.db import insert_rows, utcnow
from dataspace.errors import InvalidInput, NotFound
from dataspace.observability import metrics
from dataspace.tlog import witness
from dataspace.tlog.models import TLogCheckpoint, TLogEntry, TLogHead, TLogNode
from transparency import merkle
from transparency.canonical import canonical_json
from transparency.note import Checkpoint, key_name, sign_checkpoint, verifier_key

if TYPE_CHECKING:
    from dataspace.db import Database
    from dataspace.keys import KeyRing
    from dataspace.settings import Settings

LOGS = ("audit", "usage")
# Subtrees of 2**STORED_MIN_LEVEL leaves and up are stored; smaller ones are recomputed from the leaves
# (at most 2**STORED_MIN_LEVEL - 1 leaf reads), which keeps the node table at about n/8 rows.
STORED_MIN_LEVEL = 4
SEQUENCE_BATCH = 100_000
_INSERT_CHUNK = 10_000
_NODES = cast(Table, TLogNode.__table__)
_COPY_FROM = 200  # appends of this many entries or more go through COPY on PostgreSQL


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to append: its content (ids and names only) and the search keys copied out of it."""

    entry: dict[str, Any] | str  # a str is already canonical JSON (bulk writers render it themselves)
    created_at: datetime
    action: str = ""
    actor: str = ""
    subject_id: int | None = None
    partner: str | None = None


def _check_log(log: str) -> None:
    if log not in LOGS:
        raise InvalidInput(f"unknown log {log!r}")


_COLUMNS = ("log", "entry", "leaf_hash", "created_at", "action", "actor", "subject_id", "partner")


def append(session: Session, *, log: str, entries: Iterable[NewEntry]) -> int:
    """Queue entries in the caller's transaction; returns how many.

    Straight to the driver (COPY on PostgreSQL from ``_COPY_FROM`` entries, one prepared INSERT executed
    many times otherwise): a million-entry job must not build a million ORM objects or parameter dicts.
    """
    _check_log(log)
    conn = session.connection()
    dialect = conn.dialect
    bind_time = TLogEntry.__table__.c.created_at.type._cached_bind_processor(dialect)
    times: dict[datetime, Any] = {}
    sha = hashlib.sha256

    def rows() -> Iterator[tuple[Any, ...]]:
        for e in entries:
            body = e.entry if isinstance(e.entry, str) else canonical_json(e.entry)
            t = times.get(e.created_at)
            if t is None:
                t = times[e.created_at] = bind_time(e.created_at) if bind_time else e.created_at
            yield (
                log,
                body,
                sha(b"\x00" + body.encode()).digest(),
                t,
                e.action[:64],
                e.actor[:200],
                e.subject_id,
                e.partner,
            )

    it = rows()
    head = list(itertools.islice(it, _COPY_FROM))
    raw = conn.connection.driver_connection
    assert raw is not None
    if dialect.name == "postgresql" and len(head) == _COPY_FROM:  # a big append (a job's ledger): COPY
        count = 0
        with raw.cursor() as cur, cur.copy(f"COPY tlog_entries ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in itertools.chain(head, it):
                copy.write_row(row)
                count += 1
        return count
    # Column names are the constant _COLUMNS; values are bound parameters.
    ph = "%s" if dialect.name == "postgresql" else "?"
    one = f"({', '.join([ph] * len(_COLUMNS))})"
    sql = f"INSERT INTO tlog_entries ({', '.join(_COLUMNS)}) VALUES {one}"  # noqa: S608
    cursor = raw.cursor()
    count = 0
    try:
        if len(head) < _COPY_FROM:
            # All there is (a request's or a group-commit batch's few entries): one multi-row INSERT, one
            # round trip. psycopg's executemany runs a pipeline, which costs a single entry several times more.
            if head:
                many = sql + "".join([", " + one] * (len(head) - 1))
                cursor.execute(many, [value for row in head for value in row])
            return len(head)
        # Many entries where COPY is not to be had (SQLite): the prepared INSERT executed many times.
        chunk = head
        while chunk:
            cursor.executemany(sql, chunk)
            count += len(chunk)
            chunk = list(itertools.islice(it, _INSERT_CHUNK))
    finally:
        cursor.close()
    return count


# --- reading hashes ----------------------------------------------------------------------------------
_BLOCK = 1 << STORED_MIN_LEVEL  # the leaves read together: a subtree below STORED_MIN_LEVEL lies in one block


@functools.cache
def _statements(paramstyle: str) -> dict[str, str]:
    """The SQL of ``_Store``, written once per placeholder style: placeholders only, every value is bound."""
    ph = "?" if paramstyle == "qmark" else "%s"
    return {
        "node_term": f'(log = {ph} AND level = {ph} AND "index" = {ph})',
        "leaf_part": f"SELECT 2, idx, 0, leaf_hash FROM tlog_entries WHERE log = {ph} AND idx >= {ph} AND idx < {ph}",  # noqa: S608
        "head_part": f"SELECT 0, size, 0, root_hash FROM tlog_heads WHERE log = {ph}",  # noqa: S608
        "anchor_part": f"SELECT 3, size, 0, root_hash FROM tlog_checkpoints WHERE log = {ph} AND size = {ph}",  # noqa: S608
        "numbered_since": f"SELECT idx, leaf_hash FROM tlog_entries WHERE log = {ph} AND idx >= {ph} ORDER BY idx",  # noqa: S608
    }


NODE_CACHE_MAX = 1 << 14  # stored subtree hashes kept per log and database (a few MB); emptied when full


class _NodeCache:
    """Stored subtree hashes this process has read for one log of one database, and the *anchor*: a size and
    the root of the tree at that size, from a snapshot every cached node agrees with.

    A node is immutable once its subtree is complete, but a database can be emptied and refilled (the test
    suite does it between tests), restored, or a read can see a sequencing that later rolls back. So nothing
    is taken on trust: a proof takes a cached node only if its leaves lie below the anchor's size, and reads,
    in the same statement, the checkpoint at that size; unless its root is the anchor's the cache is dropped
    and the proof read again from the database. A root fixes every subtree below its size, so a match means
    the cached nodes are the database's.
    """

    __slots__ = ("anchor", "lock", "nodes")

    def __init__(self) -> None:
        self.anchor: tuple[int, bytes] | None = None
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.lock = threading.Lock()

    def add(self, seen: tuple[int, bytes] | None, head: tuple[int, bytes], got: dict[tuple[int, int], bytes]) -> None:
        """Nodes read in a statement that found ``seen`` (the anchor as it was when the statement was
        written; None: there was none) still the database's, and the head (size, root) of that snapshot."""
        with self.lock:
            if self.anchor != seen:  # another thread moved the anchor meanwhile: keep its nodes, skip ours
                return
            if len(self.nodes) + len(got) > NODE_CACHE_MAX:
                self.nodes.clear()
            self.nodes.update(got)
            if seen is None or head[0] > seen[0]:
                self.anchor = head  # the snapshot's tree extends the old anchor's: its head can anchor


# Per database, by its engine's connection pool (shared by the engine's variants with other execution options;
# a weak key: an engine dropped takes its caches with it), then per log.
_CACHES: weakref.WeakKeyDictionary[Pool, dict[str, _NodeCache]] = weakref.WeakKeyDictionary()


class _StaleCache(Exception):
    """The anchor's checkpoint is not the database's: drop the cache and read the proof again."""


class _Store:
    """Fetches complete-subtree hashes for a set of (level, index) keys in a few queries.

    Proof reads are on the hot path (a proof at a million entries must take a few milliseconds), so the
    SQL is written once here and sent straight to the driver with bound parameters; stored nodes a proof
    (a read given ``size``) has read before come from the process's ``_NodeCache``.
    """

    def __init__(self, session: Session, log: str) -> None:
        conn = session.connection()
        # The driver's own cursor: SQLAlchemy's execution machinery cost more than the queries themselves.
        self.raw = conn.connection.driver_connection
        sql = _statements(conn.dialect.paramstyle)
        self.node_term = sql["node_term"]
        self.leaf_part = sql["leaf_part"]
        self.head_part = sql["head_part"]
        self.anchor_part = sql["anchor_part"]
        self.numbered_since = sql["numbered_since"]
        self.log = log
        self.pool = conn.engine.pool
        self.fetched_leaves: dict[int, bytes] = {}

    def _cache(self) -> _NodeCache:
        logs = _CACHES.get(self.pool)
        if logs is None:
            logs = _CACHES.setdefault(self.pool, {})
        cache = logs.get(self.log)
        if cache is None:
            cache = logs.setdefault(self.log, _NodeCache())
        return cache

    def _drop_cache(self, cache: _NodeCache) -> None:
        logs = _CACHES.get(self.pool)
        if logs is not None and logs.get(self.log) is cache:
            logs[self.log] = _NodeCache()

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        cursor = self.raw.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def subtrees(
        self, keys: Iterable[tuple[int, int]], *, leaf_at: int | None = None, size: int | None = None
    ) -> dict[tuple[int, int], bytes]:
        """The hashes of these complete subtrees (level, index); with ``leaf_at``, that leaf is read too (into
        ``fetched_leaves``); with ``size``, first NotFound unless the log is sequenced up to it, and the stored
        nodes come from the node cache where it has them. One statement: its parts (stored nodes, blocks of
        leaves, the head, the cache's anchor) are joined by UNION ALL, each on its own index."""
        keys = set(keys)
        if size is None:  # the sequencer's frontier, inside its own write: straight from the database
            return self._subtrees(keys, leaf_at, None, None)
        cache = self._cache()
        try:
            return self._subtrees(keys, leaf_at, size, cache)
        except _StaleCache:
            self._drop_cache(cache)
            return self._subtrees(keys, leaf_at, size, self._cache())

    def _subtrees(
        self, keys: set[tuple[int, int]], leaf_at: int | None, size: int | None, cache: _NodeCache | None
    ) -> dict[tuple[int, int], bytes]:
        stored = [k for k in keys if k[0] >= STORED_MIN_LEVEL]
        small = [k for k in keys if k[0] < STORED_MIN_LEVEL]
        log = self.log
        parts: list[str] = []
        params: list[Any] = []
        anchor = cache.anchor if cache is not None else None
        cached: dict[tuple[int, int], bytes] = {}
        if anchor is not None:
            assert cache is not None
            below, nodes = anchor[0], cache.nodes
            for k in stored:
                h = nodes.get(k)
                if h is not None and (k[1] + 1) << k[0] <= below:
                    cached[k] = h
            if cached:
                stored = [k for k in stored if k not in cached]
            parts.append(self.anchor_part)
            params += (log, below)
        if stored:
            # An OR of full-key equalities: both databases answer it with one index probe per node.
            where = " OR ".join([self.node_term] * len(stored))
            parts.append(f'SELECT 1, level, "index", hash FROM tlog_nodes WHERE {where}')  # noqa: S608
            for lv, ix in stored:
                params += (log, lv, ix)
        # The smaller subtrees are hashed from their leaves: one index range scan per run of whole blocks
        # (an OR of ranges defeats the index on SQLite). Leaves of a block past ``size`` are read, not used.
        blocks = {(ix << lv) >> STORED_MIN_LEVEL for lv, ix in small}
        if leaf_at is not None:
            blocks.add(leaf_at >> STORED_MIN_LEVEL)
        runs: list[list[int]] = []
        for b in sorted(blocks):
            if runs and b == runs[-1][1]:
                runs[-1][1] = b + 1
            else:
                runs.append([b, b + 1])
        for lo, hi in runs:
            parts.append(self.leaf_part)
            params += (log, lo * _BLOCK, hi * _BLOCK)
        if size is not None:
            parts.append(self.head_part)
            params.append(log)
        out: dict[tuple[int, int], bytes] = {}
        leaves: dict[int, bytes] = {}
        head = (0, merkle.EMPTY_ROOT)
        anchored = anchor is None
        if parts:
            # Placeholders only: every value is a bound parameter.
            for kind, a, b, h in self._rows(" UNION ALL ".join(parts), params):
                if kind == 1:
                    out[(int(a), int(b))] = bytes(h)
                elif kind == 2:
                    leaves[int(a)] = bytes(h)
                elif kind == 0:
                    head = (int(a), bytes(h))
                else:  # the checkpoint at the anchor's size (unique per log and size)
                    anchored = anchor is not None and hmac.compare_digest(bytes(h), anchor[1])
        if not anchored and anchor is not None and head[0] == anchor[0]:  # no checkpoint row: the head will do
            anchored = hmac.compare_digest(head[1], anchor[1])
        if size is not None and size > head[0]:
            raise NotFound("the log has not reached that size yet")
        if not anchored:
            raise _StaleCache
        if cache is not None:
            if out:
                cache.add(anchor, head, out)
            out.update(cached)
        self.fetched_leaves = leaves
        for level, index in small:
            lo = index << level
            hs = [leaves[j] for j in range(lo, lo + (1 << level)) if j in leaves]
            if len(hs) == 1 << level:
                out[(level, index)] = merkle.subtree_hash(hs)
        if len(out) < len(keys):
            raise NotFound("tree nodes missing; is the log sequenced up to this size?")
        return out

    def range_hashes(self, ranges: Sequence[tuple[int, int]], *, size: int | None = None) -> list[bytes]:
        parts = [merkle.decompose(lo, hi) for lo, hi in ranges]
        got = self.subtrees((k for p in parts for k in p), size=size)
        return [merkle.fold([got[k] for k in p]) for p in parts]


# --- sequencing --------------------------------------------------------------------------------------
def origin_for(settings_issuer: str, log: str) -> str:
    u = urlparse(settings_issuer)
    host = (u.netloc + u.path).rstrip("/") or "dataspace"
    return f"{host}/{log}"


def _lock_head(session: Session, log: str, *, wait: bool = True) -> TLogHead | None:
    """Lock the log's head row (created on first use). ``wait=False``: None if another sequencer holds it
    (the very first sequencing of a log, which creates the row, still waits for a concurrent first one)."""
    head = session.execute(
        select(TLogHead).where(TLogHead.log == log).with_for_update(skip_locked=not wait)
    ).scalar_one_or_none()
    if head is not None:
        return head
    if not wait and session.execute(select(TLogHead.log).where(TLogHead.log == log)).first() is not None:
        return None  # it exists: someone else is sequencing this log right now
    try:
        with session.begin_nested():
            session.add(TLogHead(log=log, size=0, root_hash=merkle.EMPTY_ROOT))
    except IntegrityError:
        pass  # another sequencer created it first
    return session.execute(select(TLogHead).where(TLogHead.log == log).with_for_update()).scalar_one()


def _frontier(store: _Store, size: int) -> list[bytes]:
    keys = merkle.decompose(0, size)
    got = store.subtrees(keys)
    return [got[k] for k in keys]


@dataclass
class SequenceResult:
    log: str
    size: int
    root_hash: bytes
    sequenced: int
    note: str | None = None
    batches: int = field(default=0)


def sequence_batch(
    session: Session, *, log: str, keys: KeyRing, origin: str, limit: int = SEQUENCE_BATCH
) -> SequenceResult:
    """Sequence up to ``limit`` queued entries of ``log`` in the caller's transaction and sign a
    checkpoint for the new size. Idempotent: only queued rows move, each exactly once."""
    res = _sequence_batch(session, log=log, keys=keys, origin=origin, limit=limit, wait=True)
    assert res is not None  # waited for the head's lock
    return res


def _sequence_batch(
    session: Session, *, log: str, keys: KeyRing, origin: str, limit: int, wait: bool
) -> SequenceResult | None:
    """``sequence_batch``; ``wait=False``: None at once if another sequencer is at work on this log."""
    _check_log(log)
    head = _lock_head(session, log, wait=wait)
    if head is None:
        return None
    base = head.size
    # One set-based statement numbers the oldest queued rows; reading back by index (not by the ids we
    # saw) keeps the hashes consistent with what was numbered even if writers commit meanwhile.
    moved = cast(
        "CursorResult[Any]",
        session.execute(
            text(
                "UPDATE tlog_entries SET idx = :base + q.rn - 1 FROM ("
                " SELECT id, row_number() OVER (ORDER BY id) AS rn FROM tlog_entries"
                " WHERE log = :log AND idx IS NULL ORDER BY id LIMIT :limit) AS q"
                " WHERE tlog_entries.id = q.id"
            ),
            {"base": base, "log": log, "limit": limit},
        ),
    ).rowcount
    if not moved:
        return SequenceResult(log=log, size=base, root_hash=bytes(head.root_hash), sequenced=0)
    store = _Store(session, log)
    builder = merkle.RootBuilder(_frontier(store, base), base)
    nodes: list[dict[str, Any]] = []
    # The driver's cursor: SQLAlchemy's row processing cost a fifth of sequencing (bench/ledger.py, profiled).
    expected = base
    cursor = store.raw.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(store.numbered_since, (log, base))
        while rows := cursor.fetchmany(50_000):
            # Ordered by the unique (log, idx): gap-free exactly when the first and last are where they belong.
            if rows[0][0] != expected or rows[-1][0] != expected + len(rows) - 1:
                raise RuntimeError("log index gap while sequencing")  # unreachable; guard anyway
            done = builder.extend([bytes(h) for _, h in rows], record_from=STORED_MIN_LEVEL)
            nodes += ({"log": log, "level": lv, "index": ix, "hash": h} for lv, ix, h in done)
            expected += len(rows)
    finally:
        cursor.close()
    insert_rows(session, _NODES, nodes)
    root = builder.root()
    head.size = builder.size
    head.root_hash = root
    head.updated_at = utcnow()
    signer = keys.signing_key
    note = sign_checkpoint(Checkpoint(origin, builder.size, root), name=key_name(_host(origin), signer), key=signer)
    session.add(TLogCheckpoint(log=log, size=builder.size, root_hash=root, note=note))
    session.flush()
    return SequenceResult(log=log, size=builder.size, root_hash=root, sequenced=moved, note=note, batches=1)


def _host(origin: str) -> str:
    return origin.rsplit("/", 1)[0]


def sequence(
    settings: Settings, db: Database, keys: KeyRing, log: str, *, limit: int = SEQUENCE_BATCH
) -> SequenceResult:
    """Sequence everything queued in ``log``, one transaction per batch (anything that needs an up-to-date
    checkpoint calls this; it waits for a sequencer at work in another process)."""
    res = _sequence(settings, db, keys, log, limit=limit, wait=True)
    assert res is not None
    return res


def sequence_unless_busy(
    settings: Settings, db: Database, keys: KeyRing, log: str, *, limit: int = SEQUENCE_BATCH
) -> SequenceResult | None:
    """``sequence``, or None at once if another process is sequencing this log (it takes what is queued):
    the background sequencer of every replica, which would otherwise queue up behind each other."""
    return _sequence(settings, db, keys, log, limit=limit, wait=False)


def _sequence(
    settings: Settings, db: Database, keys: KeyRing, log: str, *, limit: int, wait: bool
) -> SequenceResult | None:
    origin = origin_for(settings.resolved_issuer, log)
    total = 0
    batches = 0
    note: str | None = None
    while True:
        t0 = time.perf_counter()
        with db.transaction() as session:
            got = _sequence_batch(session, log=log, keys=keys, origin=origin, limit=limit, wait=wait)
        if got is None:
            return None
        res = got
        metrics.log_sequenced(log, res.sequenced, time.perf_counter() - t0)
        if res.note is not None:  # committed, so published: keep a copy outside the database
            witness.record_quietly(settings.resolved_checkpoint_dir, log, res.note)
        total += res.sequenced
        if res.sequenced:
            batches += 1
            note = res.note
        if res.sequenced < limit:
            break
    return SequenceResult(log=log, size=res.size, root_hash=res.root_hash, sequenced=total, note=note, batches=batches)


def verifier_keys(settings: Settings, keys: KeyRing) -> list[str]:
    """The C2SP verifier keys of every signing key (active first), for offline verification."""
    host = _host(origin_for(settings.resolved_issuer, "audit"))
    return [verifier_key(key_name(host, k), k.public_bytes) for k in keys.signing_keys]


# --- reading -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredCheckpoint:
    log: str
    size: int
    root_hash: bytes
    note: str
    created_at: datetime


def latest_checkpoint(session: Session, *, log: str) -> StoredCheckpoint | None:
    _check_log(log)
    row = session.execute(
        select(TLogCheckpoint).where(TLogCheckpoint.log == log).order_by(TLogCheckpoint.size.desc()).limit(1)
    ).scalar_one_or_none()
    if row is None:
        return None
    return StoredCheckpoint(row.log, row.size, bytes(row.root_hash), row.note, row.created_at)


def tree_size(session: Session, *, log: str) -> int:
    head = session.get(TLogHead, log)
    return head.size if head is not None else 0


@dataclass(frozen=True)
class InclusionProof:
    log: str
    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    log: str
    first: int
    second: int
    hashes: list[bytes]


def inclusion_proof(session: Session, *, log: str, index: int, size: int) -> InclusionProof:
    _check_log(log)
    if not 0 <= index < size:
        raise InvalidInput("index must be below tree_size")
    store = _Store(session, log)
    parts = merkle.inclusion_subtrees(index, size)
    got = store.subtrees([k for p in parts for k in p], leaf_at=index, size=size)
    leaf = store.fetched_leaves.get(index)
    if leaf is None:
        raise NotFound("no such entry")
    # Every part but the one at the tree's right edge is a single subtree.
    hashes = [got[p[0]] if len(p) == 1 else merkle.fold([got[k] for k in p]) for p in parts]
    return InclusionProof(log, index, size, leaf, hashes)


def consistency_proof(session: Session, *, log: str, first: int, second: int) -> ConsistencyProof:
    _check_log(log)
    if not 0 <= first <= second:
        raise InvalidInput("first must not exceed second")
    store = _Store(session, log)
    hashes = store.range_hashes(merkle.consistency_ranges(first, second), size=second)
    return ConsistencyProof(log, first, second, hashes)


def root_at(session: Session, *, log: str, size: int) -> bytes:
    """The root of the log's tree at ``size`` (from stored subtrees)."""
    store = _Store(session, log)
    if size == 0:
        return merkle.EMPTY_ROOT
    return store.range_hashes([(0, size)], size=size)[0]


def iter_sequenced(session: Session, *, log: str, size: int, batch: int = 20_000) -> Iterator[tuple[int, str, bytes]]:
    """(index, canonical entry, leaf hash) for indexes [0, size), in order, in keyset pages."""
    start = 0
    while start < size:
        rows = session.execute(
            select(TLogEntry.idx, TLogEntry.entry, TLogEntry.leaf_hash)
            .where(TLogEntry.log == log, TLogEntry.idx >= start, TLogEntry.idx < min(size, start + batch))
            .order_by(TLogEntry.idx)
        ).all()
        for idx, body, h in rows:
            yield int(cast(int, idx)), body, bytes(h)
        start += batch


def queued_count(session: Session, *, log: str) -> int:
    return session.execute(
        select(func.count()).select_from(TLogEntry).where(TLogEntry.log == log, TLogEntry.idx.is_(None))
    ).scalar_one()


__all__ = [
    "LOGS",
    "ConsistencyProof",
    "InclusionProof",
    "NewEntry",
    "SequenceResult",
    "StoredCheckpoint",
    "append",
    "consistency_proof",
    "inclusion_proof",
    "latest_checkpoint",
    "queued_count",
    "root_at",
    "sequence",
    "sequence_batch",
    "tree_size",
    "verifier_keys",
]
