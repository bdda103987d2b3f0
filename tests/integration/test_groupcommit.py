"""Group commit (dataspace.groupcommit) on SQLite and PostgreSQL: concurrent writes share a transaction, a
failing one fails alone, a failed COMMIT reaches every caller, and consent changes and redemptions batched
together give the answers they would give one at a time."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

import consent
from dataspace.audit import batched
from dataspace.consents import changes as consent_changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import InsufficientFunds, InvalidInput
from dataspace.events.models import OutboxEvent
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.groupcommit import GroupCommit
from dataspace.points import corrections, invariants, redemption, rewards
from dataspace.points import queries as points_queries
from dataspace.points.models import Reward
from dataspace.points.schemas import RewardCreate
from dataspace.subjects.models import Subject
from dataspace.tlog.models import TLogEntry
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import make_subject


@contextmanager
def held(writes: GroupCommit) -> Iterator[None]:
    """Keep the committer busy with a lone write until the block ends: what is submitted inside the block
    queues up and runs as one batch afterwards."""
    started, release = threading.Event(), threading.Event()

    def block(_session: Session) -> None:
        started.set()
        assert release.wait(30)

    blocker = writes.submit(block)
    assert started.wait(30)
    try:
        yield
    finally:
        release.set()
        blocker.result(30)


def outcome(future: Future[Any]) -> Any:
    """The result, or the exception, of a submitted write."""
    try:
        return future.result(30)
    except Exception as exc:  # noqa: BLE001 - the test asserts on it
        return exc


def count(ctx: Context, model: type) -> int:
    with ctx.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def grant_fn(ctx: Context, sid: int, field: str) -> Callable[[Session], consent_changes.Change]:
    req = consent_changes.GrantRequest(purpose="insurance_offer", field=field, partner="harbor_insurance")
    return lambda s: consent_changes.grant(s, subject_id=sid, request=req, signer=ctx.keys.signing_key)


@pytest.fixture
def ctx(ctx: Context) -> Context:
    """The server context with one group-commit thread, so ``held`` decides exactly what is batched."""
    ctx.settings = ctx.settings.model_copy(update={"write_threads": 1})
    return ctx


def test_concurrent_consent_changes_share_one_commit_and_each_gets_its_receipt(ctx: Context) -> None:
    load_demo_catalog(ctx)
    subjects = [make_subject(ctx) for _ in range(5)]
    writes = ctx.writes
    with held(writes):
        futures = [writes.submit(grant_fn(ctx, sid, "age")) for sid in subjects]
    changes = [f.result(30) for f in futures]
    assert writes.batches == 2
    assert writes.items == 6
    assert writes.reruns == 0
    assert all(c.changed for c in changes)
    assert {c.grant.subject_id for c in changes} == set(subjects)
    # Delivered after the commit: another session sees every row the moment the callers have their answers.
    keys = {k.kid: k.public_bytes for k in ctx.keys.signing_keys}
    with ctx.db.session() as s:
        for c in changes:
            body = s.scalar(select(ConsentReceipt.body).where(ConsentReceipt.id == c.receipt_id))
            receipt = consent.verify_receipt(body, keys)
            assert receipt["pii_principal_id"] == f"subject:{c.grant.subject_id}"
    assert count(ctx, ConsentEvent) == count(ctx, ConsentReceipt) == count(ctx, OutboxEvent) == 5
    with ctx.db.session() as s:
        actions = list(s.scalars(select(TLogEntry.action).where(TLogEntry.action == "consent.granted")))
    assert len(actions) == 5


def test_bonuses_of_one_batch_are_credited_together_once_each(ctx: Context) -> None:
    load_demo_catalog(ctx)
    a, b = make_subject(ctx), make_subject(ctx)
    writes = ctx.writes
    with held(writes):  # a: two fields (50 + 20 points) in one batch, b: one field, and b's again (a repeat)
        futures = [
            writes.submit(grant_fn(ctx, a, "age")),
            writes.submit(grant_fn(ctx, a, "gender")),
            writes.submit(grant_fn(ctx, b, "age")),
            writes.submit(grant_fn(ctx, b, "age")),
        ]
    changes = [f.result(30) for f in futures]
    assert [c.changed for c in changes] == [True, True, True, False]
    assert writes.reruns == 0
    now = utcnow()
    with ctx.db.session() as s:
        assert points_queries.get_summary(s, subject_id=a, now=now).balance == 70
        assert points_queries.get_summary(s, subject_id=b, now=now).balance == 50
        invariants.check_invariants(s)
        awarded = list(s.scalars(select(TLogEntry.action).where(TLogEntry.action == "points.bonus_awarded")))
    assert len(awarded) == 3
    # Withdrawn and granted again in a later batch: never earned twice.
    ctx.writes.call(
        lambda s: consent_changes.withdraw(s, subject_id=b, grant_id=changes[2].grant.id, signer=ctx.keys.signing_key)
    )
    assert ctx.writes.call(grant_fn(ctx, b, "age")).changed
    with ctx.db.session() as s:
        assert points_queries.get_summary(s, subject_id=b, now=now).balance == 50
        invariants.check_invariants(s)


def test_a_failing_change_fails_alone_and_the_others_commit(ctx: Context) -> None:
    load_demo_catalog(ctx)
    a, b, c = (make_subject(ctx) for _ in range(3))
    writes = ctx.writes
    with held(writes):
        futures = [
            writes.submit(grant_fn(ctx, a, "age")),
            writes.submit(grant_fn(ctx, b, "no_such_field")),
            writes.submit(grant_fn(ctx, c, "age")),
        ]
    first, failed, third = (outcome(f) for f in futures)
    assert isinstance(failed, InvalidInput)
    assert "no_such_field" in str(failed)
    assert first.changed
    assert third.changed
    assert writes.reruns == 1
    with ctx.db.session() as s:
        granted = set(s.scalars(select(ConsentGrant.subject_id)))
    assert granted == {a, c}
    assert count(ctx, ConsentEvent) == count(ctx, ConsentReceipt) == 2


def test_a_failed_commit_reaches_every_caller_and_nothing_runs_again(ctx: Context) -> None:
    @contextmanager
    def failing_commit(session: Session) -> Iterator[None]:
        def boom(s: Session) -> None:
            if s.info.get("boom"):
                raise RuntimeError("the disk is full")

        event.listen(session, "before_commit", boom)
        with batched(session):
            yield

    writes = GroupCommit(ctx.db, around=failing_commit)
    calls = 0

    def add_subject(session: Session) -> int:
        nonlocal calls
        calls += 1
        session.info["boom"] = True
        subject = Subject(blind_ref=uuid.uuid4().hex)
        session.add(subject)
        session.flush()
        return subject.id

    try:
        with held(writes):
            futures = [writes.submit(add_subject) for _ in range(3)]
        results = [outcome(f) for f in futures]
    finally:
        writes.close()
    assert all(isinstance(r, RuntimeError) and "disk is full" in str(r) for r in results)
    assert calls == 3
    assert writes.reruns == 0
    assert count(ctx, Subject) == 0


def test_two_withdrawals_of_one_grant_in_one_batch_answer_with_the_withdrawal_receipt(ctx: Context) -> None:
    load_demo_catalog(ctx)
    sid = make_subject(ctx)
    granted = ctx.writes.call(grant_fn(ctx, sid, "age"))

    def withdraw(s: Session) -> consent_changes.Change:
        return consent_changes.withdraw(s, subject_id=sid, grant_id=granted.grant.id, signer=ctx.keys.signing_key)

    with held(ctx.writes):
        futures = [ctx.writes.submit(withdraw) for _ in range(2)]
    first, second = (f.result(30) for f in futures)
    assert ctx.writes.reruns == 0
    assert first.changed
    assert not second.changed
    # The second read the event the first held back for the batch's single insert, not the older grant event.
    assert second.receipt_id == first.receipt_id != granted.receipt_id
    with ctx.db.session() as s:
        kinds = list(s.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)))
    assert kinds == ["granted", "withdrawn"]


def test_redemptions_in_one_batch_never_oversell_and_the_one_too_many_fails_alone(ctx: Context) -> None:
    subjects = [make_subject(ctx) for _ in range(3)]
    now = utcnow()
    with ctx.db.transaction() as s:
        rewards.create_reward(s, data=RewardCreate(key="lounge", name="Lounge", cost=100, stock=2))
        for sid in subjects:
            corrections.post_correction(
                s, subject_id=sid, amount=250, reason="start", idempotency_key=f"s{sid}", now=now
            )

    def redeem(sid: int) -> Callable[[Session], redemption.RedemptionResult]:
        return lambda s: redemption.redeem(s, subject_id=sid, reward_key="lounge", idempotency_key=f"k{sid}", now=now)

    with held(ctx.writes):
        futures = [ctx.writes.submit(redeem(sid)) for sid in subjects]
    results = [outcome(f) for f in futures]
    assert [type(r) for r in results] == [redemption.RedemptionResult, redemption.RedemptionResult, InsufficientFunds]
    assert "out of stock" in str(results[2])
    assert [r.redemption.balance_after for r in results[:2]] == [150, 150]
    assert ctx.writes.reruns == 1
    with ctx.db.session() as s:
        assert s.scalar(select(Reward.stock)) == 0
        assert points_queries.get_summary(s, subject_id=subjects[2], now=now).balance == 250
        invariants.check_invariants(s)
    # The same key again replays the stored answer and spends nothing.
    again = ctx.writes.call(redeem(subjects[0]))
    assert again.replayed
    assert again.redemption == results[0].redemption


def test_close_finishes_what_is_queued_then_refuses_new_writes(ctx: Context) -> None:
    writes = GroupCommit(ctx.db, threads=3)

    def add_subject(session: Session) -> int:
        subject = Subject(blind_ref=uuid.uuid4().hex)
        session.add(subject)
        session.flush()
        return subject.id

    with held(writes):
        futures = [writes.submit(add_subject) for _ in range(40)]
        closer = threading.Thread(target=writes.close)
        closer.start()
    closer.join(30)
    assert not closer.is_alive()
    assert len({f.result(30) for f in futures}) == 40
    assert count(ctx, Subject) == 40
    with pytest.raises(RuntimeError, match="closed"):
        writes.submit(add_subject)


def _recording(calls: list[tuple[str, str]], name: str, fail: Exception | None = None) -> Callable[[Session], int]:
    """A write that records its name and its transaction's tag (new per session), then fails if told to."""

    def fn(session: Session) -> int:
        calls.append((name, session.info.setdefault("tag", uuid.uuid4().hex)))
        subject = Subject(blind_ref=uuid.uuid4().hex)
        session.add(subject)
        session.flush()  # a write first: it must not survive the failure
        if fail is not None:
            raise fail
        return subject.id

    return fn


def _middle_one_fails(ctx: Context, error: Exception) -> tuple[GroupCommit, list[object], list[tuple[str, str]]]:
    """Three writes submitted as one batch, the middle one raising ``error`` after writing; InvalidInput is
    a write's own answer. Returns the committer, the three outcomes and the recorded calls."""
    writes = GroupCommit(ctx.db, own_errors=(InvalidInput,))
    calls: list[tuple[str, str]] = []
    try:
        with held(writes):
            futures = [
                writes.submit(_recording(calls, "a")),
                writes.submit(_recording(calls, "middle", error)),
                writes.submit(_recording(calls, "c")),
            ]
        outcomes = [outcome(f) for f in futures]
    finally:
        writes.close()
    return writes, outcomes, calls


def test_a_domain_error_is_its_own_answer_and_the_rest_run_again_together(ctx: Context) -> None:
    writes, (a, bad, c), calls = _middle_one_fails(ctx, InvalidInput("no such field"))
    assert isinstance(bad, InvalidInput)
    assert isinstance(a, int)
    assert isinstance(c, int)
    assert count(ctx, Subject) == 2
    # The batch stopped at the faulty one, which got its error and ran once; the others ran again together.
    assert [name for name, _ in calls] == ["a", "middle", "a", "c"]
    assert calls[2][1] == calls[3][1] != calls[0][1]
    assert writes.reruns == 1


def test_a_database_error_makes_everyone_run_again_alone(ctx: Context) -> None:
    _, (a, flaky, c), calls = _middle_one_fails(ctx, RuntimeError("deadlock detected"))
    assert isinstance(flaky, RuntimeError)
    assert isinstance(a, int)
    assert isinstance(c, int)
    assert [name for name, _ in calls] == ["a", "middle", "a", "middle", "c"]  # everyone again, alone
    assert len({tag for _, tag in calls}) == 4  # the batch's transaction, then one each
    assert count(ctx, Subject) == 2
