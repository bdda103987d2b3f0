"""Real-time decisions over HTTP, for the operator's systems (steward role): ask a contract's decision service
about one customer at the moment of an event, and read past answers. No partner route reads them."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dataspace.db import MAX_ID
from dataspace.http.deps import authorize, context_of, read_session
from dataspace.http.params import Id
from dataspace.principal import Principal
from dataspace.realtime import DecisionOutcome, DecisionService, decide, list_decisions
from dataspace.realtime.models import RealtimeDecision

router = APIRouter(prefix="/v1", tags=["real-time decisions"])


class DecisionRequest(BaseModel):
    event_id: str = Field(min_length=1, max_length=128, description="The triggering event's id (idempotency key).")
    event_type: str = Field(min_length=1, max_length=128, description="One of the contract's decision events.")
    subject_id: int | None = Field(default=None, ge=1, le=MAX_ID, strict=True)
    customer_ref: str | None = Field(default=None, min_length=1, max_length=256, description="The operator's id.")


class RealtimeDecisionRead(BaseModel):
    id: int
    contract_id: int
    subject_id: int
    event_id: str
    event_type: str
    outcome: str = Field(description="decided, or not_permitted (no consent: the model did not run).")
    decision: str | float | None
    created_at: datetime
    replayed: bool = Field(default=False, description="The stored answer to an event already decided.")

    @classmethod
    def of(cls, o: DecisionOutcome) -> RealtimeDecisionRead:
        return cls(**o.__dict__)


def _service(request: Request) -> DecisionService:
    service: DecisionService = request.app.state.decisions
    return service


@router.post("/decisions/{contract_id}", response_model=RealtimeDecisionRead)
def ask_decision(
    contract_id: Id,
    body: DecisionRequest,
    request: Request,
    principal: Principal = Depends(authorize("realtime.decisions", "write")),
) -> Response:
    """The partner model's decision for one consenting customer, computed now in a warm sandbox."""
    # On the hot path of the operator's systems (hundreds per second): the context is read directly rather than
    # through a dependency, and the answer, built from the typed model, is serialized once (FastAPI would
    # validate the returned model again against ``response_model``, which stays for the OpenAPI document).
    ctx = context_of(request)
    outcome = decide(
        _service(request),
        ctx.db,
        ctx.keys,
        ctx.vault,
        ctx.writes,
        principal=principal,
        contract_id=contract_id,
        event_id=body.event_id,
        event_type=body.event_type,
        subject_id=body.subject_id,
        customer_ref=body.customer_ref,
    )
    return Response(RealtimeDecisionRead.of(outcome).model_dump_json(), media_type="application/json")


@router.get("/decisions", response_model=list[RealtimeDecisionRead])
def past_decisions(
    contract_id: int | None = Query(default=None, ge=1, le=MAX_ID),
    limit: int = Query(default=100, ge=1, le=1000),
    principal: Principal = Depends(authorize("realtime.decisions", "read")),
    session: Session = Depends(read_session),
) -> list[RealtimeDecisionRead]:
    rows: list[RealtimeDecision] = list_decisions(session, contract_id=contract_id, limit=limit)
    return [RealtimeDecisionRead.of(DecisionOutcome.of(r)) for r in rows]
