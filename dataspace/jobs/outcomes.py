"""What a partner can observe of a job, and when: a number-free reason and times on a fixed schedule.

A partner model chooses how its job ends (a failure, invalid output, a crash with some exit status) and how
long it runs. Anything the partner sees of that would be a channel out of the clean room, so:

- A failed job's partner-visible ``error`` is one code of ``REASONS``: fixed, number-free text. The full
  failure (counts of bad rows, exit status, the model's error line) is ``Job.error_detail``, shown to
  stewards (``GET /v1/jobs/{id}/decisions``) and written to the audit trail; never to the partner.
- Partner-visible times are multiples of the tick (``job_release_tick_seconds``), and a job's final state
  becomes visible at ``visible_at = max(ceil(floor(created_at) + hold), ceil(finished_at))``: until then the partner
  sees the job ``queued`` (no started time, no attempt count), and its ``job.*`` events carry and are
  delivered at ``visible_at``. A job that ends within the hold shows the same time whatever it did: zero
  bits through timing. One that runs past the hold (a large population; the sandbox's wall clock limit bounds
  the model's own part) leaks at most log2(1 + overrun / tick) bits, stated in README.
- Cancelling before the outcome shows always ends ``cancelled`` with no outcome, whatever the job did.

A job's epsilon is paid at submission (``dataspace.agreements.budget``), so an outcome, failure or success, is
never free: that is what bounds the outcome bit (success or a reason code) a job can carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.db import flush_deferred, utcnow
from dataspace.events import service as events
from dataspace.events.models import OutboxEvent, WebhookDelivery
from dataspace.jobs.models import Job
from dataspace.observability import metrics

# The partner-visible reasons a job can end with: fixed text, no numbers, nothing the model can choose.
REASONS: dict[str, str] = {
    "model_failed": "the model failed while scoring (crashed, raised, or could not be loaded)",
    "output_invalid": "the model's output broke the decision schema or the one-decision-per-input rule",
    "timeout": "the model ran past the sandbox's wall clock limit",
    "resource_limit": "the model hit a CPU, memory or output size limit",
    "cancelled": "the partner cancelled the job",
    "not_runnable": "the contract, model or partner was not usable when the job started or stored",
    "sandbox_unavailable": "the model sandbox is unavailable on this server",
    "internal": "the server failed while running the job",
}

_OUTPUT_INVALID = ("output invalid", "model output does not match the decision schema")
_RESOURCE = ("killed: cpu", "killed: memory", "output too large")


def reason_of_sandbox(reason: str) -> str:
    """The partner-visible code for a sandbox failure's reason text (which may carry numbers)."""
    if reason == "timeout":
        return "timeout"
    if reason.startswith(_OUTPUT_INVALID):
        return "output_invalid"
    if reason.startswith(_RESOURCE):
        return "resource_limit"
    return "model_failed"


@dataclass(frozen=True)
class ReleaseSchedule:
    """Partner-visible time granularity (``tick`` seconds, 0 = exact times, for tests only) and the
    minimum delay after submission before a job's outcome shows (``hold`` seconds)."""

    tick: int = 60
    hold: int = 300

    @classmethod
    def of(cls, settings: object) -> ReleaseSchedule:
        return cls(
            tick=int(getattr(settings, "job_release_tick_seconds", cls.tick)),
            hold=int(getattr(settings, "job_release_hold_seconds", cls.hold)),
        )

    def floor(self, t: datetime) -> datetime:
        if self.tick <= 0:
            return t
        seconds = math.floor(t.timestamp() / self.tick) * self.tick
        return datetime.fromtimestamp(seconds, UTC)

    def ceil(self, t: datetime) -> datetime:
        if self.tick <= 0:
            return t
        seconds = math.ceil(t.timestamp() / self.tick) * self.tick
        return datetime.fromtimestamp(seconds, UTC)

    def visible_at(self, created_at: datetime, finished_at: datetime) -> datetime:
        """The partner-visible submission time plus the hold (so the shown duration is the same for every
        job that ends within it), or the first tick after the job ended if that is later."""
        return max(self.ceil(self.floor(created_at) + timedelta(seconds=self.hold)), self.ceil(finished_at))


@dataclass(frozen=True)
class PartnerJobState:
    status: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def partner_state(job: Job, now: datetime, schedule: ReleaseSchedule) -> PartnerJobState:
    """The job as its partner may see it at ``now``."""
    created = schedule.floor(job.created_at)
    if job.cancel_requested_at is not None:
        return PartnerJobState("cancelled", "cancelled", created, schedule.floor(job.cancel_requested_at))
    if job.status in ("succeeded", "failed", "cancelled") and job.visible_at is not None and job.visible_at <= now:
        error = job.error if job.status != "succeeded" else None
        return PartnerJobState(job.status, error, created, job.visible_at)
    return PartnerJobState("queued", None, created, None)


def is_visible_final(job: Job, now: datetime) -> bool:
    """Whether the partner already sees the job's final state."""
    if job.cancel_requested_at is not None:
        return True
    return job.visible_at is not None and job.visible_at <= now and job.status in ("succeeded", "failed", "cancelled")


# --- a job's end, as the partner will see it ------------------------------------------------------------
def mark_failed(session: Session, job: Job, code: str, detail: str, schedule: ReleaseSchedule) -> None:
    """Fail the job: the partner gets ``code`` (one of ``REASONS``), stewards and the audit trail
    the full ``detail``."""
    assert code in REASONS
    job.status = "failed"
    job.error = code
    job.error_detail = detail[:2000]
    job.finished_at = utcnow()
    session.flush()
    details = {"reason": code, "detail": job.error_detail}
    record_event(session, actor=None, action="job.failed", target=f"job:{job.id}", details=details)
    job_completed(session, job, schedule)


def job_completed(session: Session, job: Job, schedule: ReleaseSchedule) -> None:
    """Set when the job's final state shows to the partner, and write the partner's events for it (same
    transaction as the state change), dated and delivered at that time (``ReleaseSchedule.visible_at``)."""
    metrics.job_finished(job.status)
    assert job.finished_at is not None
    job.visible_at = schedule.visible_at(job.created_at, job.finished_at)
    session.flush()
    if job.cancel_requested_at is not None:
        return  # the partner saw it cancelled already
    events.emit(
        session,
        "job.completed",
        {
            "job_id": job.id,
            "contract_id": job.contract_id,
            "status": job.status,
            "reason": job.error if job.status != "succeeded" else None,
        },
        partner_id=job.partner_id,
        now=job.visible_at,
    )
    if job.status == "succeeded":
        events.emit(
            session,
            "decision.ready",
            {"job_id": job.id, "results_url": f"/v1/partner/jobs/{job.id}/results"},
            partner_id=job.partner_id,
            now=job.visible_at,
        )


def withdraw_hidden_events(session: Session, job: Job, now: datetime) -> None:
    """Delete the partner's not-yet-visible events of this job (and their pending deliveries): the partner
    cancelled before the outcome showed, so the outcome never shows."""
    flush_deferred(session)
    hidden = [
        event_id
        for event_id, data in session.execute(
            select(OutboxEvent.id, OutboxEvent.data).where(
                OutboxEvent.partner_id == job.partner_id,
                OutboxEvent.type.in_(("job.completed", "decision.ready")),
                OutboxEvent.occurred_at > now,
            )
        )
        if isinstance(data, dict) and data.get("job_id") == job.id
    ]
    if hidden:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(hidden)))
        session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(hidden)))
