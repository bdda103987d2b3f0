"""The demo builds a usable world: accounts that sign in, rewards, consents with receipts, a job that runs."""

from __future__ import annotations

from sqlalchemy import func, select

from dataspace.auth import login
from dataspace.consents.models import ConsentGrant, ConsentReceipt
from dataspace.db import utcnow
from dataspace.demo.build import build_demo, subject_id_for
from dataspace.jobs import runner
from dataspace.jobs.models import Contract, Job
from dataspace.points import service as points


def test_demo_builds_a_world_a_newcomer_can_click_through(ctx):
    accounts = build_demo(ctx, customers=90, progress=lambda _m: None)
    assert {"steward", "auditor", "alice", "bob", "chen"} <= set(accounts.users)
    assert {"harbor_insurance", "voltgrid"} <= set(accounts.clients)
    with ctx.db.transaction() as s:
        alice = login.sign_in(
            session=s, username="alice", password=accounts.users["alice"]["password"], address="127.0.0.1"
        )
    assert alice.outcome is login.Outcome.OK
    with ctx.db.session() as s:
        assert sorted(r.key for r in points.list_rewards(s)) == ["charging_credit", "coffee", "health_check", "lounge"]
        grants = s.scalar(select(func.count()).select_from(ConsentGrant))
        assert grants == s.scalar(select(func.count()).select_from(ConsentReceipt)) > 0
        # The insurer's contract is approved; the charging network's only proposed (a steward reviews it).
        assert list(s.scalars(select(Contract.status).order_by(Contract.id))) == ["approved", "proposed"]
        assert s.scalar(select(Job.status)) == "queued"
        # Nothing is granted by default: chen granted nothing.
        chen = subject_id_for(ctx, "C0000003")
        assert s.scalar(select(func.count()).where(ConsentGrant.subject_id == chen)) == 0
    # The server's worker would run the queued job; run it here the same way.
    assert runner.run_queued(ctx) == 1
    with ctx.db.session() as s:
        job = s.scalars(select(Job)).one()
        assert job.status == "succeeded", job.error
        assert points.get_summary(s, subject_id=subject_id_for(ctx, "C0000001"), now=utcnow()).balance > 0
    # Running the demo again reuses what is there.
    assert build_demo(ctx, customers=90, progress=lambda _m: None).users == accounts.users
