"""What the steward console needs beyond the contract and model routes: the job queue (the operator's view,
with exact states and failure details), a Python model's source and the checks it passed for review, its
rejection, and every partner's privacy budgets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.agreements import contracts
from dataspace.agreements.models import PartnerModel, PrivacyBudget
from dataspace.errors import NotFound
from dataspace.http.deps import WriteSession, authorize, read_session
from dataspace.http.params import Id
from dataspace.jobs import uploads
from dataspace.jobs.models import Job, JobShard
from dataspace.jobs.schemas import ContractDecision, ModelRead
from dataspace.partners.models import Partner
from dataspace.principal import Principal

router = APIRouter(tags=["steward"])

JOB_STATUSES = "^(queued|running|succeeded|failed|cancelled)$"


class QueuedJobRead(BaseModel):
    """A job as the operator sees it: its true state, shards done of total, the failure's details."""

    id: int
    partner_key: str
    contract_id: int
    model_id: int
    status: str
    attempt: int
    shards_total: int
    shards_done: int
    error: str | None
    error_detail: str | None
    submitted_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ModelReview(BaseModel):
    model: ModelRead
    partner_key: str
    uploaded_by: str
    approvals: list[str]
    required_approvals: int
    source: str | None  # Python modules only (ONNX is a binary graph; its checked signature is in ``model``)
    checks: list[dict[str, Any]]


class BudgetStewardRead(BaseModel):
    partner_key: str
    purpose: str
    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float
    updated_at: datetime


@router.get("/v1/jobs", response_model=list[QueuedJobRead])
def job_queue(
    status: str | None = Query(default=None, pattern=JOB_STATUSES),
    limit: int = Query(default=100, ge=1, le=500),
    principal: Principal = Depends(authorize("jobs", "read")),
    session: Session = Depends(read_session),
) -> list[QueuedJobRead]:
    """The newest jobs first (all partners)."""
    stmt = select(Job, Partner.key).join(Partner, Partner.id == Job.partner_id).order_by(Job.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    rows = list(session.execute(stmt))
    done: dict[int, int] = {}
    ids = [job.id for job, _ in rows if job.shard_count]
    if ids:
        counted = (
            select(JobShard.job_id, func.count())
            .where(JobShard.job_id.in_(ids), JobShard.status == "succeeded")
            .group_by(JobShard.job_id)
        )
        done = {int(job_id): int(n) for job_id, n in session.execute(counted)}
    return [
        QueuedJobRead(
            id=job.id,
            partner_key=key,
            contract_id=job.contract_id,
            model_id=job.model_id,
            status=job.status,
            attempt=job.attempt,
            shards_total=job.shard_count,
            shards_done=done.get(job.id, 0),
            error=job.error,
            error_detail=job.error_detail,
            submitted_by=job.submitted_by,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
        for job, key in rows
    ]


def _review(session: Session, model: PartnerModel) -> ModelReview:
    contract = contracts.get(session, contract_id=model.contract_id)
    partner = session.get(Partner, model.partner_id)
    source = None
    if model.kind == "python":
        source = model.data.decode("utf-8", errors="replace")  # it compiled as UTF-8 at upload
    return ModelReview(
        model=ModelRead.of(model),
        partner_key=partner.key if partner is not None else "",
        uploaded_by=model.uploaded_by,
        approvals=list(model.approvals),
        required_approvals=contract.required_approvals,
        source=source,
        checks=uploads.review_checks(model),
    )


@router.get("/v1/models/{model_id}/review", response_model=ModelReview)
def model_review(
    model_id: Id,
    principal: Principal = Depends(authorize("models", "read")),
    session: Session = Depends(read_session),
) -> ModelReview:
    """A model for review: a Python module's source, the checks it passed at upload, who approved it."""
    model = session.get(PartnerModel, model_id)
    if model is None:
        raise NotFound("no such model")
    return _review(session, model)


@router.post("/v1/models/{model_id}/reject", response_model=ModelReview)
def reject_model(
    *,
    model_id: Id,
    body: ContractDecision | None = None,
    principal: Principal = Depends(authorize("models", "write")),
    session: WriteSession,
) -> ModelReview:
    model = uploads.reject(session, principal=principal, model_id=model_id, reason=body.reason if body else "")
    return _review(session, model)


@router.get("/v1/privacy-budgets", response_model=list[BudgetStewardRead])
def all_budgets(
    principal: Principal = Depends(authorize("contracts", "read")),
    session: Session = Depends(read_session),
) -> list[BudgetStewardRead]:
    m = contracts.MICRO
    stmt = (
        select(PrivacyBudget, Partner.key)
        .join(Partner, Partner.id == PrivacyBudget.partner_id)
        .order_by(Partner.key, PrivacyBudget.purpose_key)
    )
    return [
        BudgetStewardRead(
            partner_key=key,
            purpose=b.purpose_key,
            epsilon_total=b.micro_epsilon_total / m,
            epsilon_spent=b.micro_epsilon_spent / m,
            epsilon_remaining=(b.micro_epsilon_total - b.micro_epsilon_spent) / m,
            updated_at=b.updated_at,
        )
        for b, key in session.execute(stmt)
    ]
