"""Jobs: submission, the persisted state machine's transitions, and the operator's view of decisions.

queued ──claim──> running ──store──> succeeded
  │                  │ └──error───> failed
  │                  └──stale heartbeat (server died)──> queued (attempt + 1) or failed
  └──cancel──> cancelled <──cancel── running (the runner notices before storing and stores nothing)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.auth.principal import Principal
from dataspace.db import utcnow
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.jobs import contracts, uploads
from dataspace.jobs.models import Contract, Decision, Job

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_ACTIVE_JOBS_PER_PARTNER = 20


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
    job = Job(
        partner_id=contract.partner_id,
        contract_id=contract.id,
        model_id=model.id,
        status="queued",
        attempt=1,
        stats={},
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
        details={"contract_id": contract.id, "model_id": model.id},
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


def cancel(session: Session, *, principal: Principal, job_id: int) -> Job:
    job = get_owned(session, principal=principal, job_id=job_id)
    if job.status in FINAL:
        raise Conflict(f"job is {job.status}")
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(("queued", "running")))
        .values(status="cancelled", finished_at=now, error="cancelled by the partner")
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise Conflict("job finished meanwhile")
    session.refresh(job)
    record_event(session, actor=principal, action="job.cancelled", target=f"job:{job.id}")
    from dataspace.jobs.runner import job_completed  # runner imports this module

    job_completed(session, job)
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


def is_stale(job: Job, now: datetime, stale_after_seconds: float) -> bool:
    beat = job.heartbeat_at or job.started_at or job.created_at
    return (now - beat).total_seconds() >= stale_after_seconds
