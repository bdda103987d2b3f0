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
from transparency import merkle
from transparency.note import open_checkpoint

STEWARD = Principal(subject="alice", role="steward", client_id="console")


def _append(ctx: Context, n: int, start: int = 0) -> None:
    now = utcnow()
    with ctx.db.transaction() as s:
        append(
            s,
            log="usage",
            entries=[
                NewEntry(entry={"n": i}, created_at=now + timedelta(microseconds=i), action="use", subject_id=i % 7)
                for i in range(start, start + n)
            ],
        )


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
