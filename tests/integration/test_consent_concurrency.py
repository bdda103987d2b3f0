"""Concurrent toggles of the same grant, with real threads against SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from dataspace.consents import changes
from dataspace.consents.changes import GrantRequest
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import make_subject

N = 8


def race(fn):
    """Run ``fn`` in N threads released together; return results and errors."""
    barrier = threading.Barrier(N)
    results, errors = [], []

    def run():
        barrier.wait()
        try:
            results.append(fn())
        except Exception as exc:  # noqa: BLE001  (collected and asserted on below)
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_concurrent_grants_of_one_scope_yield_one_active_grant(ctx):
    load_demo_catalog(ctx)
    sid = make_subject(ctx)

    def grant():
        with ctx.db.transaction() as s:
            change = changes.grant(
                s,
                subject_id=sid,
                request=GrantRequest(purpose="insurance_offer", field="age", partner="harbor_insurance"),
                signer=ctx.keys.signing_key,
            )
            return change.grant.id, change.receipt_id, change.changed

    results, errors = race(grant)
    assert errors == []
    assert len(results) == N
    assert len({r[0] for r in results}) == 1  # every caller sees the same grant
    assert len({r[1] for r in results}) == 1  # and the same receipt
    assert sum(r[2] for r in results) == 1  # exactly one call made the change
    with ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsentGrant)) == 1
        assert s.scalar(select(func.count()).select_from(ConsentEvent)) == 1
        assert s.scalar(select(func.count()).select_from(ConsentReceipt)) == 1


def test_concurrent_withdrawals_record_one_withdrawal(ctx):
    load_demo_catalog(ctx)
    sid = make_subject(ctx)
    with ctx.db.transaction() as s:
        gid = changes.grant(
            s,
            subject_id=sid,
            request=GrantRequest(purpose="insurance_offer", field="age", partner="harbor_insurance"),
            signer=ctx.keys.signing_key,
        ).grant.id

    def withdraw():
        with ctx.db.transaction() as s:
            return changes.withdraw(s, subject_id=sid, grant_id=gid, signer=ctx.keys.signing_key).changed

    results, errors = race(withdraw)
    assert errors == []
    assert sorted(results) == [False] * (N - 1) + [True]
    with ctx.db.session() as s:
        kinds = list(s.scalars(select(ConsentEvent.kind).order_by(ConsentEvent.id)))
        assert kinds == ["granted", "withdrawn"]
        assert s.scalar(select(func.count()).select_from(ConsentReceipt)) == 2


def test_concurrent_grant_and_withdraw_toggles_stay_consistent(ctx):
    """Customers flipping a switch fast: whatever interleaving, at most one grant is active and every
    change has exactly one event and one receipt."""
    load_demo_catalog(ctx)
    sid = make_subject(ctx)
    request = GrantRequest(purpose="insurance_offer", field="age", partner="harbor_insurance")

    def toggle():
        for _ in range(3):
            with ctx.db.transaction() as s:
                gid = changes.grant(s, subject_id=sid, request=request, signer=ctx.keys.signing_key).grant.id
            with ctx.db.transaction() as s:
                changes.withdraw(s, subject_id=sid, grant_id=gid, signer=ctx.keys.signing_key)
        return True

    _, errors = race(toggle)
    assert errors == []
    with ctx.db.session() as s:
        states = list(s.scalars(select(ConsentGrant.state)))
        events = s.scalar(select(func.count()).select_from(ConsentEvent))
        receipts = s.scalar(select(func.count()).select_from(ConsentReceipt))
    assert states.count("active") <= 1
    assert events == receipts == 2 * len(states) - states.count("active")
