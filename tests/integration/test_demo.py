"""The demo builds a usable world: accounts that sign in, rewards, consents with receipts, a job that runs."""

from __future__ import annotations

from sqlalchemy import func, select

from dataspace.agreements.models import Contract
from dataspace.auth import login
from dataspace.db import utcnow
from dataspace.demo.build import build_demo, subject_id_for
from dataspace.events import dashboard
from dataspace.events.contract_models import CollaborationRelease
from dataspace.grants.models import ConsentGrant, ConsentReceipt
from dataspace.jobs.models import Job
from dataspace.points import queries as points_queries
from dataspace.points import rewards as points_rewards
from dataspace.realtime.models import RealtimeDecision


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
        assert sorted(r.key for r in points_rewards.list_rewards(s)) == [
            "charging_credit",
            "coffee",
            "health_check",
            "lounge",
        ]
        grants = s.scalar(select(func.count()).select_from(ConsentGrant))
        assert grants == s.scalar(select(func.count()).select_from(ConsentReceipt)) > 0
        # The insurer's contract is approved; the charging network's only proposed (a steward reviews it).
        assert list(s.scalars(select(Contract.status).order_by(Contract.id))) == ["approved", "proposed"]
        assert s.scalar(select(Job.status)) == "queued"
        # Nothing is granted by default: chen granted nothing.
        chen = subject_id_for(ctx, "C0000003")
        assert s.scalar(select(func.count()).where(ConsentGrant.subject_id == chen)) == 0
    # The collaboration loop played: bookings, real-time offers for consenting customers only, acceptances
    # linked to their decisions, a dead-lettered delivery, the insurer's first DP release.
    with ctx.db.session() as s:
        view = dashboard.steward_view(s, dashboard.window(bucket="hour"))
        assert s.scalar(select(func.count()).select_from(CollaborationRelease)) == 1
        decided = s.scalars(select(RealtimeDecision).where(RealtimeDecision.outcome == "decided")).all()
        for d in decided:  # only customers consenting to every feature the model reads were scored
            fields = set(s.scalars(select(ConsentGrant.field_key).where(ConsentGrant.subject_id == d.subject_id)))
            assert fields == {"age", "app_sessions_30d", "monthly_card_spend"}
    [loop] = view["decisions"]
    assert loop["totals"]["decided"] == len(decided) > 0
    assert loop["totals"]["not_permitted"] > 0
    [accepted] = view["outcomes"]
    assert 0 < accepted["totals"]["outcomes"] <= len(decided)
    booked = next(d for d in view["deliveries"] if d["event_type"] == "battery_swap.booked")
    assert booked["totals"]["dead"] == 1
    # Nobody consented to share EV ownership with VoltGrid for bookings: left out of every copy, counted.
    assert booked["dropped_fields"] == {"ev_owner": booked["totals"]["events"]}
    assert booked["totals"]["delivered"] == booked["totals"]["events"] - 1
    # The server's worker would run the queued job; run it here the same way.
    assert ctx.jobs.run_queued() == 1
    with ctx.db.session() as s:
        job = s.scalars(select(Job)).one()
        assert job.status == "succeeded", job.error
        assert points_queries.get_summary(s, subject_id=subject_id_for(ctx, "C0000001"), now=utcnow()).balance > 0
    # Running the demo again reuses what is there.
    assert build_demo(ctx, customers=90, progress=lambda _m: None).users == accounts.users
