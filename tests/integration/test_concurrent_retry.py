"""A race the server can win by trying again is never the customer's problem: the consent service re-reads
and retries a change a concurrent one overtook, and the group committer runs a write again (bounded, with
jittered backoff) after a retryable error, a PostgreSQL serialization failure or deadlock included.

The interleavings are forced on PostgreSQL with a real second transaction, committed on another connection
at the exact moment between two statements of the first (SQLite serializes writers: they cannot happen).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from dataspace.consents import changes
from dataspace.consents.changes import GrantRequest
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import ConcurrentChange, Conflict
from dataspace.grants.models import ConsentEvent, ConsentGrant
from dataspace.groupcommit import GroupCommit
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import make_subject

AGE = GrantRequest(purpose="insurance_offer", field="age", partner="harbor_insurance")


@contextmanager
def between_statements(
    ctx: Context, session: Session, matches: Callable[[str], bool], meanwhile: Callable[[], None], *, after: bool
) -> Iterator[list[int]]:
    """Run ``meanwhile`` (its own transaction, on another connection) once, just before (or after) the first
    statement of ``session`` that ``matches``; yields a list that records that it ran."""
    ours = session.connection()
    ran: list[int] = []

    def hook(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if conn is ours and not ran and matches(statement):
            ran.append(1)
            meanwhile()

    name = "after_cursor_execute" if after else "before_cursor_execute"
    event.listen(ctx.db.engine, name, hook)
    try:
        yield ran
    finally:
        event.remove(ctx.db.engine, name, hook)


def _grant(ctx: Context, sid: int, request: GrantRequest = AGE) -> int:
    with ctx.db.transaction() as s:
        return changes.grant(s, subject_id=sid, request=request, signer=ctx.keys.signing_key).grant.id


def _withdraw(ctx: Context, sid: int, gid: int) -> None:
    with ctx.db.transaction() as s:
        changes.withdraw(s, subject_id=sid, grant_id=gid, signer=ctx.keys.signing_key)


def _inserts_grant(statement: str) -> bool:
    return statement.lstrip().upper().startswith("INSERT INTO CONSENT_GRANTS")


def _updates_grant(statement: str) -> bool:
    return statement.lstrip().upper().startswith("UPDATE CONSENT_GRANTS")


@pytest.fixture
def postgres(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time: this interleaving cannot happen there")


def test_a_grant_overtaken_by_a_grant_then_a_withdrawal_is_made_not_refused(ctx: Context, postgres: None) -> None:
    """The customer's toggle raced two others: when its insert ran another grant was active, and by the time
    it looked for that grant it had been withdrawn. Today's answer was a 409 "retry"; now it grants."""
    load_demo_catalog(ctx)
    sid = make_subject(ctx)
    other: list[int] = []
    with ctx.db.transaction() as s:
        with (
            between_statements(ctx, s, _inserts_grant, lambda: other.append(_grant(ctx, sid)), after=False),
            between_statements(ctx, s, _inserts_grant, lambda: _withdraw(ctx, sid, other[0]), after=True) as ran,
        ):
            change = changes.grant(s, subject_id=sid, request=AGE, signer=ctx.keys.signing_key)
        assert ran
    assert change.changed
    assert change.grant.id != other[0]
    with ctx.db.session() as s:
        states = dict(s.execute(select(ConsentGrant.id, ConsentGrant.state)).all())
        assert states == {other[0]: "withdrawn", change.grant.id: "active"}
        assert s.scalar(select(func.count()).select_from(ConsentEvent)) == 3


def test_a_renewal_overtaken_by_another_renewal_is_decided_again(ctx: Context, postgres: None) -> None:
    load_demo_catalog(ctx)
    sid = make_subject(ctx)
    now = utcnow()
    gid = _grant(ctx, sid, GrantRequest(**{**AGE.__dict__, "valid_until": now + timedelta(days=10)}))

    def other_renewal() -> None:
        with ctx.db.transaction() as s:
            changes.renew(
                s, subject_id=sid, grant_id=gid, valid_until=now + timedelta(days=20), signer=ctx.keys.signing_key
            )

    mine = now + timedelta(days=30)
    with ctx.db.transaction() as s:
        with between_statements(ctx, s, _updates_grant, other_renewal, after=False) as ran:
            change = changes.renew(s, subject_id=sid, grant_id=gid, valid_until=mine, signer=ctx.keys.signing_key)
        assert ran
    assert change.changed
    with ctx.db.session() as s:
        row = s.get(ConsentGrant, gid)
        assert row is not None
        assert row.valid_until == mine
        assert row.version == 3
        kinds = list(s.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)))
        assert kinds == ["granted", "renewed", "renewed"]


def test_a_renewal_overtaken_by_a_withdrawal_is_refused_for_what_it_is(ctx: Context, postgres: None) -> None:
    load_demo_catalog(ctx)
    sid = make_subject(ctx)
    gid = _grant(ctx, sid, GrantRequest(**{**AGE.__dict__, "valid_until": utcnow() + timedelta(days=10)}))
    with (
        ctx.db.transaction() as s,
        between_statements(ctx, s, _updates_grant, lambda: _withdraw(ctx, sid, gid), after=False),
        pytest.raises(Conflict) as refused,
    ):
        changes.renew(s, subject_id=sid, grant_id=gid, valid_until=None, signer=ctx.keys.signing_key)
    assert not isinstance(refused.value, ConcurrentChange)
    assert "only a running grant" in refused.value.detail


def _flaky(failures: int, error: Callable[[Session], None]) -> tuple[Callable[[Session], str], list[int]]:
    runs: list[int] = []

    def fn(session: Session) -> str:
        runs.append(1)
        if len(runs) <= failures:
            error(session)
        return "done"

    return fn, runs


def _concurrent_change(_session: Session) -> None:
    raise ConcurrentChange("the grant changed concurrently")


def test_group_commit_runs_a_write_again_after_a_retryable_error(ctx: Context) -> None:
    writes = GroupCommit(ctx.db, retry_pause=0.001, own_errors=(Conflict,))
    try:
        fn, runs = _flaky(3, _concurrent_change)
        assert writes.call(fn) == "done"
        assert len(runs) == 4
        always, runs = _flaky(100, _concurrent_change)
        with pytest.raises(ConcurrentChange):
            writes.call(always)
        assert len(runs) == 5  # bounded: the fifth error is the answer
    finally:
        writes.close()


def test_group_commit_retries_a_postgresql_serialization_failure(ctx: Context, postgres: None) -> None:
    """The database itself says "could not serialize" (SQLSTATE 40001) or "deadlock" (40P01)."""

    def serialization_failure(session: Session) -> None:
        session.execute(text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"))

    def deadlock(session: Session) -> None:
        session.execute(text("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$"))

    writes = GroupCommit(ctx.db, retry_pause=0.001, own_errors=(Conflict,))
    try:
        for error in (serialization_failure, deadlock):
            fn, runs = _flaky(2, error)
            assert writes.call(fn) == "done"
            assert len(runs) == 3
    finally:
        writes.close()


def test_a_batch_with_a_retryable_error_answers_everyone(ctx: Context) -> None:
    writes = GroupCommit(ctx.db, retry_pause=0.001, own_errors=(Conflict,))
    started, release = threading.Event(), threading.Event()

    def block(_session: Session) -> None:
        started.set()
        assert release.wait(30)

    try:
        blocker = writes.submit(block)
        assert started.wait(30)
        flaky, runs = _flaky(1, _concurrent_change)
        futures = [writes.submit(lambda _s, i=i: i) for i in range(3)]
        futures.insert(1, writes.submit(flaky))
        release.set()
        blocker.result(30)
        assert [f.result(30) for f in futures] == [0, "done", 1, 2]
        assert len(runs) == 2
    finally:
        writes.close()


def test_customers_toggling_through_two_replicas_never_see_a_conflict(ctx: Context) -> None:
    """Real concurrency through the HTTP API: two server replicas (each its own group committer) on one
    database, threads flipping the same switch of one customer through either. Every answer is a success;
    at most one grant is active; every change has its event and receipt."""
    from fastapi.testclient import TestClient

    from dataspace.app import create_app
    from dataspace.grants.models import ConsentReceipt
    from tests.factories.identities import bearer, issue_token

    load_demo_catalog(ctx)
    sid = make_subject(ctx)
    token = issue_token(ctx, "customer", subject_id=sid)
    replicas = [Context(settings=ctx.settings, db=ctx.db, keys=ctx.keys) for _ in range(2)]
    apps = [create_app(r) for r in replicas]
    body = {"purpose": "insurance_offer", "field": "age", "partner": "harbor_insurance"}
    statuses: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)
    # FastAPI builds a route's validators on its first request: do that once per replica before the threads
    # (concurrent first requests race inside pydantic's schema build, a test artefact: a server has one loop).
    for app in apps:
        with TestClient(app) as warm:
            gid = warm.post("/v1/me/consents", json=body, headers=bearer(token)).json()["grant"]["id"]
            assert warm.delete(f"/v1/me/consents/{gid}", headers=bearer(token)).status_code == 200

    def toggle(n: int) -> None:
        try:
            clients = [TestClient(app) for app in apps]
            barrier.wait()
            for i in range(4):
                granted = clients[(n + i) % 2].post("/v1/me/consents", json=body, headers=bearer(token))
                statuses.append(granted.status_code)
                if granted.status_code in (200, 201):
                    gid = granted.json()["grant"]["id"]
                    withdrawn = clients[(n + i + 1) % 2].delete(f"/v1/me/consents/{gid}", headers=bearer(token))
                    statuses.append(withdrawn.status_code)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=toggle, args=(n,)) for n in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for r in replicas:
            r.stop_writes()
    assert errors == []
    assert statuses
    assert set(statuses) <= {200, 201}, sorted(set(statuses))
    with ctx.db.session() as s:
        states = list(s.scalars(select(ConsentGrant.state)))
        events = s.scalar(select(func.count()).select_from(ConsentEvent))
        receipts = s.scalar(select(func.count()).select_from(ConsentReceipt))
    assert states.count("active") <= 1
    assert events == receipts == 2 * len(states) - states.count("active")
