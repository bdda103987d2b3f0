"""The DB-backed log on SQLite and PostgreSQL: queue, sequence, checkpoints, proofs from stored nodes."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import InvalidInput, NotFound
from dataspace.principal import Principal
from dataspace.tlog import log as tlog_log
from dataspace.tlog.log import (
    NewEntry,
    append,
    consistency_proof,
    inclusion_proof,
    latest_checkpoint,
    queued_count,
    root_at,
    sequence,
    sequence_batch,
    sequence_unless_busy,
    verifier_keys,
)
from dataspace.tlog.models import TLogEntry
from tests.conftest import truncate_all
from transparency import merkle
from transparency.note import open_checkpoint

STEWARD = Principal(subject="alice", role="steward", client_id="console")


def _entries(n: int, start: int = 0, salt: str = "") -> list[NewEntry]:
    now = utcnow()
    return [
        NewEntry(entry={"n": i, "s": salt}, created_at=now + timedelta(microseconds=i), action="use", subject_id=i % 7)
        for i in range(start, start + n)
    ]


def _append(ctx: Context, n: int, start: int = 0, salt: str = "") -> None:
    with ctx.db.transaction() as s:
        append(s, log="usage", entries=_entries(n, start, salt))


def _leaves(ctx: Context, log: str) -> list[bytes]:
    with ctx.db.session() as s:
        rows = s.execute(
            select(TLogEntry.idx, TLogEntry.leaf_hash).where(TLogEntry.log == log).order_by(TLogEntry.idx)
        ).all()
    assert [r[0] for r in rows] == list(range(len(rows)))
    return [bytes(r[1]) for r in rows]


def test_record_event_queues_then_sequences_with_signed_checkpoint(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        record_event(
            s,
            actor=STEWARD,
            action="catalog.field.create",
            target="field:income",
            request_id="r1",
            details={"version": 1},
        )
        record_event(s, actor=None, action="auth.denied", target="route:/v1/audit/events", result="denied")
    with ctx.db.session() as s:
        assert queued_count(s, log="audit") == 2
    res = sequence(ctx.settings, ctx.db, ctx.keys, "audit")
    assert (res.sequenced, res.size) == (2, 2)
    assert sequence(ctx.settings, ctx.db, ctx.keys, "audit").sequenced == 0
    with ctx.db.session() as s:
        cp = latest_checkpoint(s, log="audit")
        assert cp is not None
        first = s.execute(select(TLogEntry.entry).where(TLogEntry.idx == 0, TLogEntry.log == "audit")).scalar_one()
    parsed = open_checkpoint(cp.note, verifier_keys(ctx.settings, ctx.keys))
    assert parsed.size == 2
    assert parsed.root_hash == merkle.root_from_leaf_hashes(_leaves(ctx, "audit"))
    assert parsed.origin.endswith("/audit")
    assert '"actor":"steward:alice"' in first
    assert '"action":"catalog.field.create"' in first


def test_rolled_back_event_is_not_logged(ctx: Context) -> None:
    def change_then_fail() -> None:
        with ctx.db.transaction() as s:
            record_event(s, actor=STEWARD, action="x", target="y")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        change_then_fail()
    with ctx.db.session() as s:
        assert queued_count(s, log="audit") == 0


def test_proofs_from_stored_nodes_match_reference_over_several_batches(ctx: Context) -> None:
    sizes = []
    total = 0
    for n in (1, 5, 16, 17, 40, 3):
        _append(ctx, n, total)
        total += n
        res = sequence(ctx.settings, ctx.db, ctx.keys, "usage", limit=13)
        sizes.append(res.size)
    leaves = _leaves(ctx, "usage")
    assert len(leaves) == total == sizes[-1]
    with ctx.db.session() as s:
        for size in {1, 2, 7, 16, 17, 39, 64, total}:
            assert root_at(s, log="usage", size=size) == merkle.root_from_leaf_hashes(leaves[:size])
            for index in range(size):
                p = inclusion_proof(s, log="usage", index=index, size=size)
                assert p.leaf_hash == leaves[index]
                assert p.hashes == merkle.inclusion_proof(leaves, index, size)
            for first in range(size + 1):
                c = consistency_proof(s, log="usage", first=first, second=size)
                assert c.hashes == merkle.consistency_proof(leaves, first, size)
        with pytest.raises(NotFound):
            inclusion_proof(s, log="usage", index=0, size=total + 1)
        with pytest.raises(InvalidInput):
            inclusion_proof(s, log="usage", index=5, size=5)
        with pytest.raises(InvalidInput):
            consistency_proof(s, log="nope", first=1, second=2)
        counts = s.execute(select(func.count()).select_from(TLogEntry).where(TLogEntry.idx.is_not(None))).scalar()
        assert counts == total


def test_a_busy_background_sequencer_steps_aside_instead_of_queueing(ctx: Context, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: a second sequencer cannot even start")
    _append(ctx, 1)
    sequence(ctx.settings, ctx.db, ctx.keys, "usage")  # the log's head row exists from the first sequencing on
    _append(ctx, 5, start=1)
    with ctx.db.transaction() as holder:
        # Another process is sequencing: it holds the head's lock until it commits.
        busy = sequence_batch(holder, log="usage", keys=ctx.keys, origin="test", limit=1)
        assert busy.sequenced == 1
        started = time.monotonic()
        assert sequence_unless_busy(ctx.settings, ctx.db, ctx.keys, "usage") is None
        assert time.monotonic() - started < 5  # it did not wait for the lock
    done = sequence_unless_busy(ctx.settings, ctx.db, ctx.keys, "usage")
    assert done is not None
    assert done.sequenced == 4
    assert done.size == 6


def _check_proofs(ctx: Context, sizes: list[int]) -> None:
    """Every inclusion proof at each size, and consistency proofs and roots, equal the reference tree's."""
    leaves = _leaves(ctx, "usage")
    with ctx.db.session() as s:
        for size in sizes:
            assert root_at(s, log="usage", size=size) == merkle.root_from_leaf_hashes(leaves[:size])
            for index in range(size):
                p = inclusion_proof(s, log="usage", index=index, size=size)
                assert (p.leaf_hash, p.hashes) == (leaves[index], merkle.inclusion_proof(leaves, index, size))
            for first in (1, 16, 33, size - 1):
                if 0 < first <= size:
                    c = consistency_proof(s, log="usage", first=first, second=size)
                    assert c.hashes == merkle.consistency_proof(leaves, first, size)


def _cached(ctx: Context) -> dict[tuple[int, int], bytes]:
    logs = tlog_log._CACHES.get(ctx.db.engine.pool, {})
    return logs["usage"].nodes if "usage" in logs else {}


def test_cached_nodes_never_outlive_the_tree_they_came_from(ctx: Context) -> None:
    """The process keeps stored nodes proofs have read; a log emptied and refilled (same sizes, the same
    first entries, different ones after), grown, or a sequencing rolled back after a proof read its nodes:
    every proof is still the database's tree's."""
    _append(ctx, 150)
    sequence(ctx.settings, ctx.db, ctx.keys, "usage", limit=64)
    _check_proofs(ctx, [150, 128, 100])
    before = dict(_cached(ctx))
    assert before  # the proofs above went through the cache

    # Emptied and refilled: the first 40 entries the same, the rest not (so the low subtrees match).
    truncate_all(ctx.db)
    _append(ctx, 40)
    _append(ctx, 110, start=40, salt="refilled")
    sequence(ctx.settings, ctx.db, ctx.keys, "usage", limit=64)
    _check_proofs(ctx, [150, 128, 100])
    after = _cached(ctx)
    assert any(after.get(k) not in (None, h) for k, h in before.items())  # the same keys, now other hashes

    # Grown: the anchor moves up, nodes read at the old sizes stay in use.
    _append(ctx, 70, start=150, salt="more")
    sequence(ctx.settings, ctx.db, ctx.keys, "usage")
    _check_proofs(ctx, [220, 150])

    # A proof inside a sequencing that rolls back: its nodes must not answer once other entries take those
    # indexes.
    leaves = _leaves(ctx, "usage")
    with ctx.db.sessionmaker() as s:
        append(s, log="usage", entries=_entries(60, 220, salt="rolled back"))
        sequence_batch(s, log="usage", keys=ctx.keys, origin="test")
        assert inclusion_proof(s, log="usage", index=5, size=280).leaf_hash == leaves[5]
        inclusion_proof(s, log="usage", index=250, size=280)
        assert _cached(ctx).get((4, 16)) is not None  # leaves 256-271, not committed
        s.rollback()
    _append(ctx, 60, start=220, salt="kept")
    sequence(ctx.settings, ctx.db, ctx.keys, "usage")
    _check_proofs(ctx, [280])
