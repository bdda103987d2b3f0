"""Request and response shapes of the partner-job API (what each audience may see)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field

from dataspace.agreements.contracts import MAX_K, MIN_K, effective_status
from dataspace.agreements.models import Contract, PartnerModel
from dataspace.db import MAX_ID
from dataspace.jobs.models import Decision, Job, Release
from dataspace.jobs.outcomes import ReleaseSchedule, partner_state
from dataspace.jobs.release import noise_interval


class ContractCreate(BaseModel):
    purpose: str = Field(max_length=64)
    title: str = Field(default="", max_length=200)
    features: list[dict[str, Any]] = Field(min_length=1, max_length=50)
    decision_schema: dict[str, Any]
    k_min: int = Field(ge=MIN_K, le=MAX_K, strict=True)
    epsilon_per_release: float = Field(strict=True)
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime
    decision_service: dict[str, Any] | None = Field(
        default=None, description='Real-time decisions: {"events": [event types that may ask for one]}.'
    )


class ContractRead(BaseModel):
    id: int
    purpose: str
    title: str
    features: list[dict[str, Any]]
    decision_schema: dict[str, Any]
    k_min: int
    epsilon_per_release: float
    valid_from: datetime
    valid_until: datetime
    status: str
    sensitive: bool
    required_approvals: int
    created_at: datetime
    decision_service: dict[str, Any] | None = None

    @classmethod
    def of(cls, c: Contract, now: datetime) -> ContractRead:
        return cls(
            id=c.id,
            purpose=c.purpose_key,
            title=c.title,
            features=c.features,
            decision_schema=c.decision_schema,
            k_min=c.k_min,
            epsilon_per_release=c.epsilon_per_release,
            valid_from=c.valid_from,
            valid_until=c.valid_until,
            status=effective_status(c, now),
            sensitive=c.sensitive,
            required_approvals=c.required_approvals,
            created_at=c.created_at,
            decision_service=c.decision_service,
        )


class ContractStewardRead(ContractRead):
    partner_id: int
    partner_key: str = ""
    proposed_by: str
    approvals: list[str]
    decided_by: str | None
    decision_reason: str


class ContractDecision(BaseModel):
    reason: str = Field(default="", max_length=1000)


class BudgetUpdate(BaseModel):
    partner_key: str = Field(max_length=64)
    purpose: str = Field(max_length=64)
    epsilon_total: float = Field(strict=True)


class ModelRead(BaseModel):
    id: int
    contract_id: int
    kind: str
    sha256: str
    size_bytes: int
    status: str
    signature: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, m: PartnerModel) -> ModelRead:
        return cls(
            id=m.id,
            contract_id=m.contract_id,
            kind=m.kind,
            sha256=m.sha256,
            size_bytes=m.size_bytes,
            status=m.status,
            signature=m.signature,
            created_at=m.created_at,
        )


class JobCreate(BaseModel):
    model_id: int = Field(ge=1, le=MAX_ID, strict=True)


class JobRead(BaseModel):
    """What the partner sees of a job (``dataspace.jobs.outcomes``): ``queued`` until its outcome shows on
    the release schedule, then the final status with, for a failure, a number-free reason code; times are
    multiples of the published tick. Exact counts (eligible, suppressed, decided), the failure's details,
    the start time and the attempt count are for the operator; the partner gets DP aggregates."""

    id: int
    contract_id: int
    model_id: int
    status: str
    error: str | None = Field(description="One of the documented reason codes, or null.")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, j: Job, now: datetime, schedule: ReleaseSchedule) -> JobRead:
        state = partner_state(j, now, schedule)
        return cls(
            id=j.id,
            contract_id=j.contract_id,
            model_id=j.model_id,
            status=state.status,
            error=state.error,
            created_at=state.created_at,
            finished_at=state.finished_at,
        )


class ReleaseRead(BaseModel):
    job_id: int
    mechanism: str
    epsilon: float
    result: dict[str, Any]
    noise: dict[str, float] = Field(
        default_factory=dict,
        description="Half-widths of each released number's 95% noise interval (count, mean) and the confidence.",
    )
    created_at: datetime

    @classmethod
    def of(cls, r: Release) -> ReleaseRead:
        epsilon = r.micro_epsilon / 1_000_000
        return cls(
            job_id=r.job_id,
            mechanism=r.mechanism,
            epsilon=epsilon,
            result=r.result,
            noise=noise_interval(epsilon, r.result),
            created_at=r.created_at,
        )


class BudgetRead(BaseModel):
    purpose: str
    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float


class DecisionRead(BaseModel):
    subject_id: int
    label: str | None
    value: float | None

    @classmethod
    def of(cls, d: Decision) -> DecisionRead:
        return cls(subject_id=d.subject_id, label=d.label, value=d.value)


class DecisionPage(BaseModel):
    """The operator's view of a job: its real state, exact counts and the failure's full details."""

    job_id: int
    status: str
    error: str | None = None
    error_detail: str | None = None
    stats: dict[str, Any]
    decisions: list[DecisionRead]
    next_after: int | None
