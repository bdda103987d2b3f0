"""Partner jobs over HTTP: contracts, model uploads, jobs, DP results and budgets (partner side), contract
and model approval, budgets and the decisions view (steward / compliance side).

A partner only ever sees its own contracts, models and jobs: anybody else's id is "not found".
The in-process job worker is one of the server's background tasks (``dataspace.background``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dataspace.agreements import contracts
from dataspace.agreements.contracts import ContractProposal
from dataspace.context import Context
from dataspace.db import MAX_ID, utcnow
from dataspace.http.deps import WriteSession, authorize, get_context, partner_of, read_session
from dataspace.http.params import Id, read_body
from dataspace.jobs import release, revocation, service, uploads
from dataspace.jobs.outcomes import ReleaseSchedule
from dataspace.jobs.schemas import (
    BudgetRead,
    BudgetUpdate,
    ContractCreate,
    ContractDecision,
    ContractRead,
    ContractStewardRead,
    DecisionPage,
    DecisionRead,
    JobCreate,
    JobRead,
    ModelRead,
    ReleaseRead,
)
from dataspace.partners.models import Partner
from dataspace.principal import Principal

router = APIRouter(tags=["partner jobs"])


# --- contracts ------------------------------------------------------------------------------------------
@router.post("/v1/partner/contracts", response_model=ContractRead, status_code=status.HTTP_201_CREATED)
def propose_contract(
    *,
    body: ContractCreate,
    principal: Principal = Depends(authorize("partner.contracts", "write")),
    session: WriteSession,
) -> ContractRead:
    contract = contracts.propose(
        session,
        principal=principal,
        proposal=ContractProposal(
            purpose=body.purpose,
            features=body.features,
            decision_schema=body.decision_schema,
            k_min=body.k_min,
            epsilon_per_release=body.epsilon_per_release,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
            title=body.title,
            decision_service=body.decision_service,
        ),
    )
    return ContractRead.of(contract, utcnow())


@router.get("/v1/partner/contracts", response_model=list[ContractRead])
def my_contracts(
    principal: Principal = Depends(authorize("partner.contracts", "read")),
    session: Session = Depends(read_session),
) -> list[ContractRead]:
    now = utcnow()
    return [ContractRead.of(c, now) for c in contracts.list_for_partner(session, principal=principal)]


@router.get("/v1/partner/contracts/{contract_id}", response_model=ContractRead)
def my_contract(
    contract_id: Id,
    principal: Principal = Depends(authorize("partner.contracts", "read")),
    session: Session = Depends(read_session),
) -> ContractRead:
    return ContractRead.of(contracts.get_owned(session, principal=principal, contract_id=contract_id), utcnow())


def _steward_view(session: Session, contract_id: int) -> ContractStewardRead:
    c = contracts.get(session, contract_id=contract_id)
    base = ContractRead.of(c, utcnow()).model_dump()
    return ContractStewardRead(
        **base,
        partner_id=c.partner_id,
        partner_key=partner.key if (partner := session.get(Partner, c.partner_id)) is not None else "",
        proposed_by=c.proposed_by,
        approvals=[a.steward for a in contracts.approvals(session, c.id)],
        decided_by=c.decided_by,
        decision_reason=c.decision_reason,
    )


@router.get("/v1/contracts", response_model=list[ContractStewardRead])
def all_contracts(
    status_filter: str | None = Query(default=None, alias="status", max_length=16),
    principal: Principal = Depends(authorize("contracts", "read")),
    session: Session = Depends(read_session),
) -> list[ContractStewardRead]:
    return [_steward_view(session, c.id) for c in contracts.list_all(session, status=status_filter)]


@router.post("/v1/contracts/{contract_id}/approve", response_model=ContractStewardRead)
def approve_contract(
    *,
    contract_id: Id,
    principal: Principal = Depends(authorize("contracts", "write")),
    session: WriteSession,
) -> ContractStewardRead:
    contracts.approve(session, principal=principal, contract_id=contract_id)
    return _steward_view(session, contract_id)


@router.post("/v1/contracts/{contract_id}/reject", response_model=ContractStewardRead)
def reject_contract(
    *,
    contract_id: Id,
    body: ContractDecision | None = None,
    principal: Principal = Depends(authorize("contracts", "write")),
    session: WriteSession,
) -> ContractStewardRead:
    contracts.reject(session, principal=principal, contract_id=contract_id, reason=body.reason if body else "")
    return _steward_view(session, contract_id)


@router.post("/v1/contracts/{contract_id}/revoke", response_model=ContractStewardRead)
def revoke_contract(
    *,
    contract_id: Id,
    body: ContractDecision | None = None,
    principal: Principal = Depends(authorize("contracts", "write")),
    session: WriteSession,
) -> ContractStewardRead:
    revocation.revoke(session, principal=principal, contract_id=contract_id, reason=body.reason if body else "")
    return _steward_view(session, contract_id)


@router.put("/v1/privacy-budgets", response_model=BudgetRead)
def set_budget(
    *,
    body: BudgetUpdate,
    principal: Principal = Depends(authorize("contracts", "write")),
    session: WriteSession,
) -> BudgetRead:
    b = contracts.set_budget(
        session,
        principal=principal,
        partner_key=body.partner_key,
        purpose_key=body.purpose,
        epsilon_total=body.epsilon_total,
    )
    m = contracts.MICRO
    return BudgetRead(
        purpose=b.purpose_key,
        epsilon_total=b.micro_epsilon_total / m,
        epsilon_spent=b.micro_epsilon_spent / m,
        epsilon_remaining=(b.micro_epsilon_total - b.micro_epsilon_spent) / m,
    )


# --- models ---------------------------------------------------------------------------------------------
def _upload(session: Session, principal: Principal, contract_id: int, kind: str, data: bytes) -> ModelRead:
    model = uploads.upload(session, principal=principal, contract_id=contract_id, kind=kind, data=data)
    return ModelRead.of(model)


@router.post("/v1/partner/models", response_model=ModelRead, status_code=status.HTTP_201_CREATED)
async def upload_model(
    *,
    request: Request,
    contract_id: int = Query(ge=1, le=MAX_ID),
    kind: str = Query(default="onnx", pattern="^(onnx|python)$"),
    principal: Principal = Depends(authorize("partner.models", "write")),
    session: WriteSession,
) -> ModelRead:
    """The model is the raw request body (``application/octet-stream``)."""
    limit = uploads.MAX_ONNX_BYTES if kind == "onnx" else uploads.MAX_PYTHON_BYTES
    data = await read_body(request, limit, "model")
    return await run_in_threadpool(_upload, session, principal, contract_id, kind, data)


@router.get("/v1/partner/models", response_model=list[ModelRead])
def my_models(
    principal: Principal = Depends(authorize("partner.models", "read")),
    session: Session = Depends(read_session),
) -> list[ModelRead]:
    return [ModelRead.of(m) for m in uploads.list_for_partner(session, principal=principal)]


@router.get("/v1/models", response_model=list[ModelRead])
def all_models(
    principal: Principal = Depends(authorize("models", "read")),
    session: Session = Depends(read_session),
) -> list[ModelRead]:
    return [ModelRead.of(m) for m in uploads.list_all(session)]


@router.post("/v1/models/{model_id}/approve", response_model=ModelRead)
def approve_model(
    *,
    model_id: Id,
    principal: Principal = Depends(authorize("models", "write")),
    session: WriteSession,
) -> ModelRead:
    return ModelRead.of(uploads.approve(session, principal=principal, model_id=model_id))


# --- jobs -----------------------------------------------------------------------------------------------
@router.post("/v1/partner/jobs", response_model=JobRead, status_code=status.HTTP_202_ACCEPTED)
def submit_job(
    *,
    body: JobCreate,
    principal: Principal = Depends(authorize("partner.jobs", "write")),
    session: WriteSession,
    ctx: Context = Depends(get_context),
) -> JobRead:
    """Queue a job; it pays its contract's ``epsilon_per_release`` now, whatever its outcome."""
    job = service.submit(session, principal=principal, model_id=body.model_id)
    return JobRead.of(job, utcnow(), ReleaseSchedule.of(ctx.settings))


@router.get("/v1/partner/jobs", response_model=list[JobRead])
def my_jobs(
    principal: Principal = Depends(authorize("partner.jobs", "read")),
    session: Session = Depends(read_session),
    ctx: Context = Depends(get_context),
) -> list[JobRead]:
    now, schedule = utcnow(), ReleaseSchedule.of(ctx.settings)
    return [JobRead.of(j, now, schedule) for j in service.list_for_partner(session, principal=principal)]


@router.get("/v1/partner/jobs/{job_id}", response_model=JobRead)
def my_job(
    job_id: Id,
    principal: Principal = Depends(authorize("partner.jobs", "read")),
    session: Session = Depends(read_session),
    ctx: Context = Depends(get_context),
) -> JobRead:
    """The job as the partner may see it: ``queued`` until its outcome shows on the release schedule."""
    job = service.get_owned(session, principal=principal, job_id=job_id)
    return JobRead.of(job, utcnow(), ReleaseSchedule.of(ctx.settings))


@router.post("/v1/partner/jobs/{job_id}/cancel", response_model=JobRead)
def cancel_job(
    *,
    job_id: Id,
    principal: Principal = Depends(authorize("partner.jobs", "write")),
    session: WriteSession,
    ctx: Context = Depends(get_context),
) -> JobRead:
    schedule = ReleaseSchedule.of(ctx.settings)
    job = service.cancel(session, principal=principal, job_id=job_id, schedule=schedule)
    return JobRead.of(job, utcnow(), schedule)


@router.get("/v1/partner/jobs/{job_id}/results", response_model=ReleaseRead)
def job_results(
    *,
    job_id: Id,
    principal: Principal = Depends(authorize("partner.jobs", "read")),
    session: WriteSession,
    ctx: Context = Depends(get_context),
) -> ReleaseRead:
    """The DP aggregate (paid when the job was submitted): computed once, the same numbers afterwards."""
    schedule = ReleaseSchedule.of(ctx.settings)
    return ReleaseRead.of(release.release_results(session, principal=principal, job_id=job_id, schedule=schedule))


@router.get("/v1/partner/budget", response_model=list[BudgetRead])
def my_budget(
    principal: Principal = Depends(authorize("partner.budget", "read")),
    session: Session = Depends(read_session),
) -> list[BudgetRead]:
    return [BudgetRead(**b) for b in release.budget_view(session, partner_id=partner_of(principal))]


@router.get("/v1/jobs/{job_id}/decisions", response_model=DecisionPage)
def job_decisions(
    job_id: Id,
    limit: int = Query(default=1000, ge=1, le=10_000),
    after: int = Query(default=0, ge=0, le=MAX_ID),
    principal: Principal = Depends(authorize("jobs.decisions", "read")),
    session: Session = Depends(read_session),
) -> DecisionPage:
    job = service.get(session, job_id=job_id)
    rows = service.decisions(session, job_id=job_id, limit=limit, after_subject=after)
    return DecisionPage(
        job_id=job.id,
        status=job.status,
        error=job.error,
        error_detail=job.error_detail,
        stats=job.stats,
        decisions=[DecisionRead.of(d) for d in rows],
        next_after=rows[-1].subject_id if len(rows) == limit else None,
    )
