"""Jobs: submission, the persisted state machine's transitions, and the operator's view of decisions.

queued ──plan──> running ──every shard stored──> succeeded
  │                  │ └──error───> failed
  │                  └──stale heartbeat while planning (server died)──> queued (attempt + 1) or failed
  └──cancel──> cancelled <──cancel── running (each shard notices before storing and stores nothing)

A running job's shards have a state machine of their own (``dataspace.jobs.engine``).
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dataspace.agreements import budget, contracts
from dataspace.agreements.models import Contract
from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.events import service as events
from dataspace.jobs import outcomes, uploads
from dataspace.jobs.models import Decision, Job
from dataspace.jobs.outcomes import ReleaseSchedule
from dataspace.principal import Principal

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_ACTIVE_JOBS_PER_PARTNER = 20
MAX_FAILED_JOBS_PER_CONTRACT_PER_DAY = 10  # failures the partner has seen, per UTC day


def submit(session: Session, *, principal: Principal, model_id: int) -> Job:
    """Queue a job for one of the partner's models under its (approved, valid) contract."""
    model = uploads.get_owned(session, principal=principal, model_id=model_id)
    contract = session.get(Contract, model.contract_id)
    assert contract is not None
    now = utcnow()
    contracts.require_usable(contract, now)
    if not uploads.is_runnable(model):
        raise Conflict(f"model {model.id} is {model.status}; a Python module needs steward approval first")
    active = session.scalars(
        select(Job.id).where(Job.partner_id == contract.partner_id, Job.status.in_(("queued", "running")))
    ).all()
    if len(active) >= MAX_ACTIVE_JOBS_PER_PARTNER:
        raise Conflict(f"at most {MAX_ACTIVE_JOBS_PER_PARTNER} jobs may be queued or running at once")
    # However small a contract's epsilon, failures (the outcome a model can choose) are also capped per day.
    # Only failures the partner already sees count, so the refusal reveals nothing new.
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    failed_today = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.contract_id == contract.id,
            Job.status == "failed",
            Job.cancel_requested_at.is_(None),
            Job.visible_at >= day_start,
            Job.visible_at <= now,
        )
    )
    if (failed_today or 0) >= MAX_FAILED_JOBS_PER_CONTRACT_PER_DAY:
        raise Conflict(
            f"{MAX_FAILED_JOBS_PER_CONTRACT_PER_DAY} jobs under this contract failed today (UTC); "
            "submit again tomorrow, or fix the model"
        )
    # The job pays its release's epsilon now, whatever its outcome (``dataspace.agreements.budget``).
    micro = contracts.to_micro(float(contract.epsilon_per_release))
    budget.charge(session, partner_id=contract.partner_id, purpose_key=contract.purpose_key, micro=micro)
    job = Job(
        partner_id=contract.partner_id,
        contract_id=contract.id,
        model_id=model.id,
        status="queued",
        attempt=1,
        stats={},
        micro_epsilon_reserved=micro,
        submitted_by=principal.actor,
        created_at=now,
    )
    session.add(job)
    session.flush()
    record_event(
        session,
        actor=principal,
        action="job.queued",
        target=f"job:{job.id}",
        details={"contract_id": contract.id, "model_id": model.id, "epsilon_reserved": micro / contracts.MICRO},
    )
    return job


def get_owned(session: Session, *, principal: Principal, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or principal.partner_id is None or job.partner_id != principal.partner_id:
        raise NotFound("no such job")
    return job


def get(session: Session, *, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("no such job")
    return job


def list_for_partner(session: Session, *, principal: Principal, limit: int = 100) -> list[Job]:
    if principal.partner_id is None:
        return []
    stmt = select(Job).where(Job.partner_id == principal.partner_id).order_by(Job.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def cancel(session: Session, *, principal: Principal, job_id: int, schedule: ReleaseSchedule | None = None) -> Job:
    """Cancel a job whose outcome the partner does not see yet. It then shows ``cancelled`` whatever it did
    meanwhile (even if it already ended: that outcome, its events and its results stay hidden), so a cancel
    cannot tell the partner whether the job had finished. Its epsilon is refunded: it revealed nothing."""
    schedule = schedule or ReleaseSchedule()
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or principal.partner_id is None or job.partner_id != principal.partner_id:
        raise NotFound("no such job")
    now = utcnow()
    if outcomes.is_visible_final(job, now):
        raise Conflict(f"job is {outcomes.partner_state(job, now, schedule).status}")
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(("queued", "running")))
        .values(status="cancelled", finished_at=now, error="cancelled", error_detail="cancelled by the partner")
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)
    contract = session.get(Contract, job.contract_id)
    assert contract is not None
    budget.refund(
        session, partner_id=job.partner_id, purpose_key=contract.purpose_key, micro=job.micro_epsilon_reserved
    )
    job.micro_epsilon_reserved = 0
    job.cancel_requested_at = now
    job.visible_at = schedule.floor(now)
    session.flush()
    record_event(
        session, actor=principal, action="job.cancelled", target=f"job:{job.id}", details={"status": job.status}
    )
    outcomes.withdraw_hidden_events(session, job, now)
    events.emit(
        session,
        "job.completed",
        {"job_id": job.id, "contract_id": job.contract_id, "status": "cancelled", "reason": "cancelled"},
        partner_id=job.partner_id,
        now=job.visible_at,
    )
    return job


def decisions(session: Session, *, job_id: int, limit: int = 1000, after_subject: int = 0) -> list[Decision]:
    """The operator's view: decisions keyed by subject, in subject order (paged)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit must be between 1 and 10000")
    get(session, job_id=job_id)
    stmt = (
        select(Decision)
        .where(Decision.job_id == job_id, Decision.subject_id > after_subject)
        .order_by(Decision.subject_id)
        .limit(limit)
    )
    return list(session.scalars(stmt))
