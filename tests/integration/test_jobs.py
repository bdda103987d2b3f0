"""Partner jobs end to end on SQLite and PostgreSQL: real consents, real emission, the real sandbox."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from dataspace.agreements import contracts
from dataspace.agreements.models import PrivacyBudget
from dataspace.consents import changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import BudgetExceeded, Conflict, InvalidInput
from dataspace.events.models import OutboxEvent
from dataspace.jobs import release, revocation, service
from dataspace.jobs.models import Decision, Job
from dataspace.points.models import PointsTransaction
from dataspace.tlog.models import TLogEntry
from tests.factories import jobs as js
from tests.factories.catalog import load_demo_catalog


@pytest.fixture
def world(ctx: Context) -> js.World:
    return js.build_world(ctx, 96)


def submit(ctx: Context, model_id: int) -> int:
    with ctx.db.transaction() as s:
        return service.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id


def test_job_scores_only_consenting_subjects_and_drops_withdrawals(ctx: Context, world: js.World) -> None:
    contract_id = js.approved_contract(ctx)
    job_id = submit(ctx, js.upload_onnx(ctx, contract_id))
    leaver = world.consenting[0]

    def withdraw_while_running(jid: int, _index: int) -> None:
        with ctx.db.session() as s:
            assert s.get(Job, jid).status == "running"  # type: ignore[union-attr]
        with ctx.db.transaction() as s:
            changes.withdraw(s, subject_id=leaver, grant_id=world.grant_ids[leaver][1], signer=ctx.keys.signing_key)

    result = ctx.jobs.run_job(job_id, before_store=withdraw_while_running)
    assert result.status == "succeeded", result.error
    with ctx.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        decided = dict(s.execute(select(Decision.subject_id, Decision.label).where(Decision.job_id == job_id)).all())
        usage = s.execute(select(TLogEntry.subject_id, TLogEntry.entry).where(TLogEntry.log == "usage")).all()
        usage_keys = set(s.scalars(select(PointsTransaction.idempotency_key).where(PointsTransaction.kind == "usage")))
        audit = [json.loads(e)["action"] for e in s.scalars(select(TLogEntry.entry).where(TLogEntry.log == "audit"))]
    stats = job.stats
    assert stats["eligible"] == len(world.consenting)
    assert stats["dropped_withdrawn"] == 1
    assert leaver not in decided
    assert set(decided) <= set(world.consenting)
    assert len(decided) == stats["decisions"] == stats["emitted"] - 1
    assert len(decided) > 40
    assert set(decided.values()) <= set(js.LABELS)
    # One ledger entry per decided subject, naming every field the job read and carrying the decision;
    # nothing for anyone else.
    entries = [json.loads(body) for _, body in usage]
    assert sorted(e["subject_id"] for e in entries) == sorted(decided)
    assert all(e["fields"] == sorted(js.FIELDS) for e in entries)
    assert all(e["decision"] == decided[e["subject_id"]] and e["job_id"] == job_id for e in entries)
    assert all(e["partner"] == js.PARTNER and e["purpose"] == js.PURPOSE for e in entries)
    assert {s for s, _ in usage} == set(decided)
    # Usage points credited to exactly the decided subjects.
    assert usage_keys == {f"usage:{job_id}:{s}" for s in decided}
    assert job.stats["points_credited"] == len(decided)
    assert not job.points_pending
    assert {"job.queued", "job.started", "job.succeeded", "contract.approved", "model.uploaded"} <= set(audit)
    # The partner's events: completion and results availability, without counts (those would leak how many
    # customers consented).
    with ctx.db.session() as s:
        events = s.scalars(select(OutboxEvent).where(OutboxEvent.type.in_(("job.completed", "decision.ready")))).all()
    assert sorted(e.type for e in events) == ["decision.ready", "job.completed"]
    assert all(e.partner_id == job.partner_id for e in events)
    assert events[0].data["job_id"] == job_id
    assert "decisions" not in json.dumps([e.data for e in events])

    # Running it again is refused (the state machine only runs queued jobs).
    with pytest.raises(Conflict):
        ctx.jobs.run_job(job_id)


def test_a_job_pays_its_release_at_submission_and_the_release_is_stored_once(ctx: Context, world: js.World) -> None:
    contract_id = js.approved_contract(ctx, epsilon=4.0)
    model_id = js.upload_onnx(ctx, contract_id)
    first, second = (submit(ctx, model_id) for _ in range(2))
    partner = js.partner_principal(ctx)
    with ctx.db.session() as s:  # paid at submission, before any outcome: 8 of 10 spent
        assert s.scalar(select(PrivacyBudget.micro_epsilon_spent)) == 8_000_000
        assert release.budget_view(s, partner_id=partner.partner_id)[0]["epsilon_remaining"] == 2.0  # type: ignore[arg-type]
    with pytest.raises(BudgetExceeded):  # 4 more would exceed
        submit(ctx, model_id)
    for job_id in (first, second):
        assert ctx.jobs.run_job(job_id).status == "succeeded"

    with ctx.db.transaction() as s:
        r1 = release.release_results(s, principal=partner, job_id=first).result
    with ctx.db.transaction() as s:
        again = release.release_results(s, principal=partner, job_id=first).result
    assert again == r1  # stored: the same noisy numbers, nothing re-spent
    assert set(r1["counts"]) == set(js.LABELS)
    assert r1["epsilon"] == 4.0
    with ctx.db.transaction() as s:
        release.release_results(s, principal=partner, job_id=second)
    with ctx.db.session() as s:  # the releases spent nothing beyond what the jobs paid
        assert s.scalar(select(PrivacyBudget.micro_epsilon_spent)) == 8_000_000

    # A steward raises the budget: the next job can be submitted; it can never go below what was spent.
    with ctx.db.transaction() as s:
        contracts.set_budget(
            s, principal=js.steward(), partner_key=js.PARTNER, purpose_key=js.PURPOSE, epsilon_total=12.0
        )
    third = submit(ctx, model_id)
    assert ctx.jobs.run_job(third).status == "succeeded"
    with ctx.db.transaction() as s:
        assert release.release_results(s, principal=partner, job_id=third).micro_epsilon == 4_000_000
    with pytest.raises(Conflict), ctx.db.transaction() as s:
        contracts.set_budget(
            s, principal=js.steward(), partner_key=js.PARTNER, purpose_key=js.PURPOSE, epsilon_total=1.0
        )


def test_groups_smaller_than_k_are_suppressed(ctx: Context, world: js.World) -> None:
    # Everybody gets "standard" (huge negative bias), so "premium" has 0 members: released as suppressed, never a count.
    contract_id = js.approved_contract(ctx, k_min=30, epsilon=2.0)
    job_id = submit(ctx, js.upload_onnx(ctx, contract_id, js.logistic_regression(js.WEIGHTS, -50.0)))
    assert ctx.jobs.run_job(job_id).status == "succeeded"
    with ctx.db.transaction() as s:
        result = release.release_results(s, principal=js.partner_principal(ctx), job_id=job_id).result
    assert result["counts"]["premium"] is None
    assert result["suppressed"] == ["premium"]
    assert result["counts"]["standard"] > 30


def test_numeric_decisions_release_a_bounded_mean(ctx: Context, world: js.World) -> None:
    contract_id = js.approved_contract(ctx, schema={"min": 0, "max": 1}, epsilon=2.0)
    job_id = submit(ctx, js.upload_onnx(ctx, contract_id))
    assert ctx.jobs.run_job(job_id).status == "succeeded"
    with ctx.db.session() as s:
        values = s.scalars(select(Decision.value).where(Decision.job_id == job_id)).all()
    assert values
    assert all(v is not None and 0 <= v <= 1 for v in values)
    with ctx.db.transaction() as s:
        result = release.release_results(s, principal=js.partner_principal(ctx), job_id=job_id).result
    assert result["kind"] == "bounded_mean"
    assert 0 <= result["mean"] <= 1
    assert result["epsilon"] == 2.0


def test_jobs_on_unapproved_revoked_or_expired_contracts_are_refused(ctx: Context, world: js.World) -> None:
    proposed = js.propose(ctx)
    with pytest.raises(Conflict, match="proposed"):
        js.upload_onnx(ctx, proposed)
    contract_id = js.approved_contract(ctx)
    model_id = js.upload_onnx(ctx, contract_id)
    queued = submit(ctx, model_id)
    with ctx.db.transaction() as s:
        revocation.revoke(s, principal=js.steward(), contract_id=contract_id)
    with pytest.raises(Conflict, match="revoked"):
        submit(ctx, model_id)
    # A job queued before the revocation fails when it starts; nothing is stored.
    result = ctx.jobs.run_job(queued)
    assert result.status == "failed"
    assert result.error == "not_runnable"  # the partner's number-free reason; the steward's detail names it
    with ctx.db.session() as s:
        assert "revoked" in (s.get(Job, queued).error_detail or "")  # type: ignore[union-attr]

    expired = js.approved_contract(ctx, valid_for=timedelta(days=1))
    expiring_model = js.upload_onnx(ctx, expired)
    with ctx.db.transaction() as s:
        c = contracts.get(s, contract_id=expired)
        c.valid_until = utcnow() - timedelta(seconds=1)
    with pytest.raises(Conflict, match="expired"):
        submit(ctx, expiring_model)
    with ctx.db.session() as s:
        assert contracts.effective_status(contracts.get(s, contract_id=expired), utcnow()) == "expired"
    counts = js.counts(ctx)
    assert counts["decisions"] == counts["usage"] == counts["releases"] == 0


def test_cancelled_while_running_stores_nothing(ctx: Context, world: js.World) -> None:
    contract_id = js.approved_contract(ctx)
    job_id = submit(ctx, js.upload_onnx(ctx, contract_id))

    def cancel(jid: int, _index: int) -> None:
        with ctx.db.transaction() as s:
            service.cancel(s, principal=js.partner_principal(ctx), job_id=jid)

    result = ctx.jobs.run_job(job_id, before_store=cancel)
    assert result.status == "cancelled"
    counts = js.counts(ctx)
    assert counts["decisions"] == counts["usage"] == 0


def test_contract_rules(ctx: Context) -> None:
    load_demo_catalog(ctx)
    # Sensitive fields need two different stewards; the same steward twice does not count.
    sensitive = js.propose(
        ctx,
        features=[
            *js.FEATURES,
            {
                "field": "health_condition",
                "transform": "group",
                "groups": {"chronic": ["diabetes", "hypertension", "asthma"]},
            },
        ],
    )
    with ctx.db.transaction() as s:
        assert contracts.approve(s, principal=js.steward("alice"), contract_id=sensitive).status == "proposed"
    with pytest.raises(Conflict, match="already approved"), ctx.db.transaction() as s:
        contracts.approve(s, principal=js.steward("alice"), contract_id=sensitive)
    with ctx.db.transaction() as s:
        assert contracts.approve(s, principal=js.steward("bob"), contract_id=sensitive).status == "approved"
        assert len(contracts.approvals(s, sensitive)) == 2
    # A rejected contract cannot be approved later.
    rejected = js.propose(ctx)
    with ctx.db.transaction() as s:
        contracts.reject(s, principal=js.steward(), contract_id=rejected, reason="too broad")
    with pytest.raises(Conflict), ctx.db.transaction() as s:
        contracts.approve(s, principal=js.steward("bob"), contract_id=rejected)
    # Malformed proposals are refused with a reason and nothing is stored.
    before = js.counts(ctx)["contracts"]
    bad = [
        {"features": [{"field": "nope", "transform": "bin", "edges": [1]}]},
        {"features": [{"field": "city", "transform": "identity"}]},  # transform not allowed by the catalog
        {"labels": []},
        {"schema": {"min": 2, "max": 1}},
        {"k_min": 1},
        {"epsilon": 0.0},
        {"valid_for": timedelta(days=-1)},
    ]
    for kw in bad:
        with pytest.raises(InvalidInput):
            js.propose(ctx, **kw)  # type: ignore[arg-type]
    assert js.counts(ctx)["contracts"] == before
