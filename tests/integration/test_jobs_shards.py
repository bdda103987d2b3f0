"""Sharded jobs in process on SQLite and PostgreSQL: plan, shards, exactly-once storing, takeover, recovery,
dispatch (the same code the broker's workers run; tests/integration/test_jobs_distributed.py adds RabbitMQ)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from dataspace.agreements.models import Contract
from dataspace.compliance.service import erase_subject
from dataspace.consents import changes as consent_changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.grants import eligibility
from dataspace.grants.models import ConsentGrant
from dataspace.jobs import lease, service
from dataspace.jobs.lease import ShardBusy
from dataspace.jobs.models import Decision, Job, JobShard
from dataspace.points.models import PointsTransaction
from dataspace.principal import Principal
from dataspace.tlog.models import TLogEntry
from tests.factories import jobs as js


@pytest.fixture
def world(ctx: Context) -> js.World:
    return js.build_world(ctx, 120)


def submit(ctx: Context, model_id: int) -> int:
    with ctx.db.transaction() as s:
        return service.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id


def decided(ctx: Context, job_id: int) -> dict[int, str | None]:
    with ctx.db.session() as s:
        return dict(s.execute(select(Decision.subject_id, Decision.label).where(Decision.job_id == job_id)).all())


def usage(ctx: Context, job_id: int) -> list[dict]:
    with ctx.db.session() as s:
        bodies = s.scalars(select(TLogEntry.entry).where(TLogEntry.log == "usage")).all()
    return [e for e in map(json.loads, bodies) if e["job_id"] == job_id]


def no_suppression(ctx: Context, contract_id: int) -> int:
    """k = 1 (below what a contract may ask for): nothing suppressed, so results depend on cut points only."""
    with ctx.db.transaction() as s:
        s.execute(update(Contract).where(Contract.id == contract_id).values(k_min=1))
    return contract_id


def test_sharded_job_decides_like_the_single_run_and_stores_each_shard_once(ctx: Context, world: js.World) -> None:
    # Shards binned with the plan's population-wide quantile cut points reproduce the single run exactly.
    model_id = js.upload_onnx(ctx, no_suppression(ctx, js.approved_contract(ctx)))
    single, sharded = submit(ctx, model_id), submit(ctx, model_id)
    assert ctx.jobs.run_job(single).status == "succeeded"
    assert ctx.jobs.run_job(sharded, shard_subjects=25).status == "succeeded"

    assert decided(ctx, sharded) == decided(ctx, single)
    assert set(decided(ctx, sharded)) == set(world.consenting)
    with ctx.db.session() as s:
        job = s.get(Job, sharded)
        assert job is not None
        rows = s.scalars(select(JobShard).where(JobShard.job_id == sharded).order_by(JobShard.index)).all()
        points = s.scalar(select(func.count()).select_from(PointsTransaction).where(PointsTransaction.kind == "usage"))
    assert job.shard_count == len(rows) == 4  # 80 eligible / 25 per shard
    assert [r.status for r in rows] == ["succeeded"] * 4
    assert [r.attempt for r in rows] == [1] * 4
    assert sum(r.size for r in rows) == job.stats["eligible"] == len(world.consenting)
    assert job.stats["decisions"] == len(world.consenting)
    assert job.stats["ledger_entries"] == len(world.consenting)
    assert not job.points_pending
    assert points == 2 * len(world.consenting)  # both jobs credited every decided subject once
    entries = usage(ctx, sharded)
    assert sorted((e["subject_id"], f) for e in entries for f in e["fields"]) == sorted(
        (s, f) for s in world.consenting for f in js.FIELDS
    )

    # A redelivered message for a shard that succeeded stores nothing again and changes nothing.
    for index in range(4):
        assert ctx.jobs.run_shard(sharded, index).status == "succeeded"
    assert len(usage(ctx, sharded)) == len(entries)
    assert ctx.jobs.finish_job(sharded) == "succeeded"


def test_stale_shard_is_taken_over_and_the_old_attempt_stores_nothing(ctx: Context, world: js.World) -> None:
    model_id = js.upload_onnx(ctx, js.approved_contract(ctx, k_min=2))
    job_id = submit(ctx, model_id)
    plan = ctx.jobs.plan_job(job_id, shard_subjects=40)
    assert (plan.status, plan.shards) == ("running", 2)
    seen: list[str] = []

    def taken_over_meanwhile(jid: int, index: int) -> None:
        # Our claim is live: a second delivery must wait...
        with pytest.raises(ShardBusy):
            ctx.jobs.run_shard(jid, index)
        # ...until our heartbeat looks dead; then it takes the shard over and stores it.
        with ctx.db.transaction() as s:
            s.execute(
                update(JobShard)
                .where(JobShard.job_id == jid, JobShard.index == index)
                .values(heartbeat_at=utcnow() - timedelta(hours=1))
            )
        seen.append(ctx.jobs.run_shard(jid, index).status)

    first = ctx.jobs.run_shard(job_id, 0, before_store=taken_over_meanwhile, heartbeat_seconds=600)
    assert first.status == "abandoned"
    assert seen == ["succeeded"]
    assert ctx.jobs.run_shard(job_id, 1).job_status == "succeeded"
    with ctx.db.session() as s:
        attempts = s.scalars(select(JobShard.attempt).where(JobShard.job_id == job_id).order_by(JobShard.index)).all()
    assert attempts == [2, 1]
    got = decided(ctx, job_id)
    entries = usage(ctx, job_id)
    assert sorted(e["subject_id"] for e in entries) == sorted(got)  # stored once, by the attempt that won


def test_withdrawal_after_the_plan_is_dropped_by_the_shard(ctx: Context, world: js.World) -> None:
    model_id = js.upload_onnx(ctx, no_suppression(ctx, js.approved_contract(ctx)))
    job_id = submit(ctx, model_id)
    ctx.jobs.plan_job(job_id, shard_subjects=1000)
    leaver = world.consenting[3]
    with ctx.db.transaction() as s:
        consent_changes.withdraw(s, subject_id=leaver, grant_id=world.grant_ids[leaver][1], signer=ctx.keys.signing_key)
    assert ctx.jobs.run_shard(job_id, 0).job_status == "succeeded"
    assert set(decided(ctx, job_id)) == set(world.consenting) - {leaver}
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.stats["dropped_withdrawn"] == 1


def test_grant_lapsing_or_subject_erased_after_the_plan_is_dropped_by_the_shard(ctx: Context, world: js.World) -> None:
    # The re-check before storing reads only grants changed or lapsed since the plan (by index): a grant whose
    # valid_until passes while the shard runs (its row otherwise untouched) counts, and so does an erasure.
    model_id = js.upload_onnx(ctx, no_suppression(ctx, js.approved_contract(ctx)))
    job_id = submit(ctx, model_id)
    ctx.jobs.plan_job(job_id, shard_subjects=1000)
    lapsed, erased = world.consenting[4], world.consenting[5]

    def lapse_and_erase(_jid: int, _index: int) -> None:  # after the sandbox scored both
        with ctx.db.transaction() as s:
            s.execute(
                update(ConsentGrant).where(ConsentGrant.id == world.grant_ids[lapsed][1]).values(valid_until=utcnow())
            )
            customer = Principal(subject="c", role="customer", client_id="c")
            erase_subject(ctx.settings, ctx.keys, s, subject_id=erased, actor=customer)

    assert ctx.jobs.run_shard(job_id, 0, before_store=lapse_and_erase).job_status == "succeeded"
    assert set(decided(ctx, job_id)) == set(world.consenting) - {lapsed, erased}
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.stats["dropped_withdrawn"] == 2


@pytest.mark.parametrize("few", [5_000, 0], ids=["few-changed", "many-changed"])
def test_a_withdrawal_stamped_before_the_plan_but_committed_after_it_is_dropped(
    ctx: Context, world: js.World, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    # The race the re-check's look-back covers: a withdrawal's transaction stamps updated_at when it starts
    # (or a server whose clock runs behind stamps it), and commits after the plan read consent, so the plan
    # counted the customer in although the row says it changed before the plan. The world's grants were all
    # written just now, inside the look-back: with the threshold at 0 they count as many changes, and the
    # bulk evaluator decides (the path a bulk consent import takes); otherwise each is evaluated alone.
    monkeypatch.setattr(eligibility, "_FEW", few)
    model_id = js.upload_onnx(ctx, no_suppression(ctx, js.approved_contract(ctx)))
    job_id = submit(ctx, model_id)
    ctx.jobs.plan_job(job_id, shard_subjects=1000)
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        planned = datetime.fromisoformat(job.plan["evaluated_at"])
    leaver = world.consenting[6]
    with ctx.db.transaction() as s:
        consent_changes.withdraw(s, subject_id=leaver, grant_id=world.grant_ids[leaver][1], signer=ctx.keys.signing_key)
        s.flush()
        stamped = planned - timedelta(seconds=2)  # as the late commit's row reads
        s.execute(update(ConsentGrant).where(ConsentGrant.id == world.grant_ids[leaver][1]).values(updated_at=stamped))
    assert ctx.jobs.run_shard(job_id, 0).job_status == "succeeded"
    assert leaver not in decided(ctx, job_id)
    assert set(decided(ctx, job_id)) == set(world.consenting) - {leaver}


def test_cancelled_job_shards_store_nothing(ctx: Context, world: js.World) -> None:
    model_id = js.upload_onnx(ctx, js.approved_contract(ctx))
    job_id = submit(ctx, model_id)
    ctx.jobs.plan_job(job_id, shard_subjects=40)

    def cancel(jid: int, _index: int) -> None:
        with ctx.db.transaction() as s:
            service.cancel(s, principal=js.partner_principal(ctx), job_id=jid)

    assert ctx.jobs.run_shard(job_id, 0, before_store=cancel).status == "abandoned"
    assert ctx.jobs.run_shard(job_id, 1).job_status == "cancelled"
    assert decided(ctx, job_id) == {}
    assert usage(ctx, job_id) == []


def test_recovery_requeues_dead_shards_then_fails_them_and_dispatch_sends_them(ctx: Context, world: js.World) -> None:
    model_id = js.upload_onnx(ctx, js.approved_contract(ctx))
    job_id = submit(ctx, model_id)
    plans: list[int] = []
    sent: list[tuple[int, int]] = []

    def send_shard(j: int, i: int) -> None:
        sent.append((j, i))

    assert ctx.jobs.dispatch_pending(send_plan=plans.append, send_shard=send_shard) == {
        "jobs": [job_id],
        "shards": [],
    }
    assert ctx.jobs.dispatch_pending(send_plan=plans.append, send_shard=send_shard)["jobs"] == []  # sent already
    later = utcnow() + timedelta(hours=1)
    assert ctx.jobs.dispatch_pending(send_plan=plans.append, send_shard=send_shard, now=later)["jobs"] == [job_id]
    assert plans == [job_id, job_id]

    ctx.jobs.plan_job(job_id, shard_subjects=40)
    assert ctx.jobs.send_planned(job_id, send_shard) == [0, 1]
    assert ctx.jobs.send_planned(job_id, send_shard) == []
    # A worker died holding shard 0 (its heartbeat stopped long ago).
    with ctx.db.transaction() as s:
        s.execute(
            update(JobShard)
            .where(JobShard.job_id == job_id, JobShard.index == 0)
            .values(status="running", attempt=1, heartbeat_at=utcnow() - timedelta(hours=1))
        )
    assert ctx.jobs.recover() == {"requeued": [], "requeued_shards": [(job_id, 0)], "failed": [], "finished": []}
    sent.clear()
    later = utcnow() + timedelta(minutes=1)  # past the planner's grace, within the redispatch period
    assert ctx.jobs.dispatch_pending(send_plan=plans.append, send_shard=send_shard, now=later)["shards"] == [
        (job_id, 0)
    ]
    # A broker that refuses messages: nothing counts as sent, the next sweep tries again.
    with ctx.db.transaction() as s:
        s.execute(update(JobShard).where(JobShard.job_id == job_id).values(dispatched_at=None))

    def broker_down(_j: int, _i: int) -> None:
        raise ConnectionError("broker down")

    assert ctx.jobs.dispatch_pending(send_plan=plans.append, send_shard=broker_down, now=later)["shards"] == []
    assert len(ctx.jobs.dispatch_pending(send_plan=plans.append, send_shard=send_shard, now=later)["shards"]) == 2

    # Shard 0 keeps dying: after MAX_ATTEMPTS claims the job fails instead of looping.
    with ctx.db.transaction() as s:
        s.execute(
            update(JobShard)
            .where(JobShard.job_id == job_id, JobShard.index == 0)
            .values(status="running", attempt=lease.MAX_ATTEMPTS, heartbeat_at=utcnow() - timedelta(hours=1))
        )
    assert ctx.jobs.recover()["failed"] == [job_id]
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.status == "failed"
    assert ctx.jobs.run_shard(job_id, 1).status == "queued"  # the job failed: nothing runs any more
    assert decided(ctx, job_id) == {}


def test_recovery_leaves_a_planned_job_with_queued_shards_alone(ctx: Context, world: js.World) -> None:
    model_id = js.upload_onnx(ctx, js.approved_contract(ctx))
    job_id = submit(ctx, model_id)
    ctx.jobs.plan_job(job_id, shard_subjects=40)
    nothing = {"requeued": [], "requeued_shards": [], "failed": [], "finished": []}
    assert ctx.jobs.recover(stale_after=timedelta(0)) == nothing  # the plan's heartbeat is old: shards carry them
    for index in range(2):
        ctx.jobs.run_shard(job_id, index, credit_inline=False)
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.points_pending) == ("succeeded", True)
        assert job.stats["points_credited"] == 0
    assert ctx.jobs.credit_pending() == [job_id]  # what a crash between storing and crediting leaves
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert not job.points_pending
        assert job.stats["points_credited"] == job.stats["decisions"] > 0
        rows = s.scalars(select(JobShard).where(JobShard.job_id == job_id)).all()
    assert not any(r.points_pending for r in rows)
    assert sum(r.stats["points_credited"] for r in rows) == job.stats["decisions"]
    assert ctx.jobs.credit_pending() == []  # nothing left; crediting again credits nobody


def test_planning_an_empty_population_succeeds_with_one_empty_shard(ctx: Context) -> None:
    js.build_world(ctx, 2)  # subject 0 grants only "age": nobody is eligible... subject 1 is
    model_id = js.upload_onnx(ctx, js.approved_contract(ctx, k_min=50))
    job_id = submit(ctx, model_id)
    assert ctx.jobs.run_job(job_id).status == "succeeded"
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.shard_count == 1
        assert job.stats["decisions"] == 0  # one eligible subject, suppressed (k = 50)
