"""Business event contracts over HTTP: the registry (propose, approve, reject, versions, specifications),
publishing events, and the steward's delivery views (dead letters, replay, per-consumer summary).

The same operations exist for the operator's side (``/v1/event-contracts``, ``/v1/events``: steward and
admin tokens, the operator's systems included) and for partners (``/v1/partner/...``: only contracts they
are a party to, only events they produce)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dataspace.context import Context
from dataspace.errors import Forbidden
from dataspace.events import contracts, delivery, spec
from dataspace.events.contract_models import EventContract, EventDelivery
from dataspace.events.publish import Published, list_events, publish
from dataspace.http.deps import WriteSession, authorize, get_context, read_session
from dataspace.http.params import Id
from dataspace.principal import Principal

router = APIRouter(prefix="/v1", tags=["event contracts"])


class RetryIn(BaseModel):
    backoff_seconds: float = Field(default=2.0, strict=True, description="Delay before the first retry.")
    multiplier: float = Field(default=2.0, strict=True, description="Each next delay is the previous one times this.")
    max_backoff_seconds: float = Field(default=3600.0, strict=True, description="Longest delay between two attempts.")
    max_attempts: int = Field(default=8, strict=True, description="Attempts before the delivery is dead-lettered.")
    dead_letter: bool = Field(default=True, strict=True)


class EventContractIn(BaseModel):
    event_type: str = Field(min_length=3, max_length=64, examples=["customer.contract_signed"])
    version: str = Field(min_length=5, max_length=20, description="Semantic version MAJOR.MINOR.PATCH.")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=4000)
    producer: str = Field("operator", max_length=64, description="'operator' or the producing partner's key.")
    consumers: list[str] = Field(min_length=1, max_length=50, description="Consuming partners' keys.")
    purpose: str | None = Field(None, max_length=64, description="Consent purpose for customer-data fields.")
    data_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema (2020-12) of the event data.")
    latency_ms: int = Field(5000, strict=True, ge=1, le=86_400_000, description="Delivery-latency requirement.")
    retry: RetryIn = Field(default_factory=RetryIn)


class EventContractRead(BaseModel):
    id: int
    event_type: str
    version: str
    status: str
    change: str
    changes: list[dict[str, str]]
    previous_id: int | None
    title: str
    description: str
    producer_partner_id: int | None
    consumer_partner_ids: list[int]
    purpose: str | None
    data_schema: dict[str, Any] = Field(serialization_alias="schema")
    latency_ms: int
    retry: dict[str, Any]
    approvals: dict[str, dict[str, str]]
    pending_approvals: list[str]
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, c: EventContract) -> EventContractRead:
        return cls(
            id=c.id,
            event_type=c.event_type,
            version=c.version,
            status=c.status,
            change=c.change,
            changes=c.changes,
            previous_id=c.previous_id,
            title=c.title,
            description=c.description,
            producer_partner_id=c.producer_partner_id,
            consumer_partner_ids=c.consumer_partner_ids,
            purpose=c.purpose_key,
            data_schema=c.schema,
            latency_ms=c.latency_ms,
            retry=c.retry,
            approvals=c.approvals,
            pending_approvals=contracts.pending_sides(c),
            created_at=c.created_at,
            decided_at=c.decided_at,
        )


class SubscriptionIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=50)


def _proposal(body: EventContractIn) -> contracts.Proposal:
    return contracts.Proposal(
        event_type=body.event_type,
        version=body.version,
        title=body.title,
        description=body.description,
        schema=body.data_schema,
        consumers=body.consumers,
        producer=body.producer,
        purpose=body.purpose,
        latency_ms=body.latency_ms,
        retry=body.retry.model_dump(),
    )


def _read(c: EventContract) -> dict[str, Any]:
    return EventContractRead.of(c).model_dump(mode="json", by_alias=True)


def _add_registry(prefix: str, obj: str) -> None:
    """The registry routes under ``prefix`` authorized as ``obj`` (one set for each side)."""

    @router.post(f"{prefix}/event-contracts", status_code=201, name=f"propose_event_contract{prefix}")
    def propose_contract(
        body: EventContractIn,
        session: WriteSession,
        principal: Principal = Depends(authorize(obj, "write")),
    ) -> dict[str, Any]:
        """Propose a contract version; the first of a type is N.0.0; a compatible change of an approved
        contract is approved at once, a breaking one needs a new major version and both sides' approval."""
        return _read(contracts.propose(session, principal=principal, proposal=_proposal(body)))

    @router.get(f"{prefix}/event-contracts", name=f"list_event_contracts{prefix}")
    def list_contracts(
        session: Session = Depends(read_session), principal: Principal = Depends(authorize(obj, "read"))
    ) -> list[dict[str, Any]]:
        return [_read(c) for c in contracts.list_contracts(session, principal=principal)]

    @router.get(f"{prefix}/event-contracts/{{contract_id}}", name=f"get_event_contract{prefix}")
    def get_contract(
        contract_id: Id,
        session: Session = Depends(read_session),
        principal: Principal = Depends(authorize(obj, "read")),
    ) -> dict[str, Any]:
        return _read(contracts.get(session, contract_id, principal=principal))

    @router.post(f"{prefix}/event-contracts/{{contract_id}}/approve", name=f"approve_event_contract{prefix}")
    def approve_contract(
        contract_id: Id,
        session: WriteSession,
        principal: Principal = Depends(authorize(obj, "write")),
    ) -> dict[str, Any]:
        return _read(contracts.approve(session, principal=principal, contract_id=contract_id))

    @router.post(f"{prefix}/event-contracts/{{contract_id}}/reject", name=f"reject_event_contract{prefix}")
    def reject_contract(
        contract_id: Id,
        session: WriteSession,
        principal: Principal = Depends(authorize(obj, "write")),
    ) -> dict[str, Any]:
        return _read(contracts.reject(session, principal=principal, contract_id=contract_id))

    @router.get(
        f"{prefix}/event-contracts/{{contract_id}}/spec",
        name=f"event_contract_spec{prefix}",
        response_class=Response,
        responses={200: {"content": {"text/markdown": {}, "text/html": {}}}},
    )
    def contract_spec(
        contract_id: Id,
        format: str = Query("md", pattern="^(md|html)$"),
        lang: str = Query("en", pattern="^(en|zh)$"),
        session: Session = Depends(read_session),
        principal: Principal = Depends(authorize(obj, "read")),
    ) -> Response:
        """The human-readable specification of this version, as a download (Markdown or HTML, en or zh)."""
        contract = contracts.get(session, contract_id, principal=principal)
        text = spec.render(session, contract, fmt=format, lang=lang)
        return Response(
            text,
            media_type=spec.FORMATS[format],
            headers={"content-disposition": f'attachment; filename="{spec.filename(contract, fmt=format, lang=lang)}"'},
        )


_add_registry("", "event_contracts")
_add_registry("/partner", "partner.event_contracts")


def _published(
    request: Request,
    ctx: Context,
    session: Session,
    *,
    principal: Principal,
    body: dict[str, Any],
    background: BackgroundTasks,
) -> JSONResponse:
    result: Published = publish(session, ctx.keys, principal=principal, body=body)
    answer = result.as_dict()
    delivery_ids = [d.id for d in result.deliveries]
    subject_id = result.event.subject_id
    session.commit()  # the decisions below read the stored event
    # Committed: acknowledged now. Deliver at once (the periodic dispatcher picks up whatever this misses).
    if delivery_ids:
        background.add_task(delivery.deliver_due, ctx.db, ctx.keys, delivery_ids=delivery_ids)
    if not result.duplicate and principal.role == "steward":
        from dataspace.events.triggers import decide_on

        answer["decisions"] = decide_on(
            request.app.state.decisions,
            ctx.db,
            ctx.keys,
            ctx.vault,
            ctx.writes,
            principal=principal,
            event_id=answer["id"],
            event_type=answer["type"],
            subject_id=subject_id,
        )
    return JSONResponse(answer, status_code=200 if result.duplicate else 201)


@router.post("/events", status_code=201, responses={200: {"description": "The same event, already stored."}})
def publish_operator_event(
    *,
    request: Request,
    background: BackgroundTasks,
    body: dict[str, Any] = Body(...),
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("events", "write")),
    session: WriteSession,
) -> JSONResponse:
    """Publish one business event as the operator: ``{id, type, version?, occurred_at, customer_ref?, data}``.
    201 when stored, 200 for the same id and body again, 409 for the same id with another body, 422 listing
    every violation of the contract. Decisions it triggers are in ``decisions`` (operator only)."""
    return _published(request, ctx, session, principal=principal, body=body, background=background)


@router.get("/events")
def operator_feed(
    *,
    event_type: str | None = Query(None, alias="type", max_length=64),
    after: int = Query(0, ge=0, le=2**31 - 1, description="Cursor: the last feed id seen."),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(read_session),
    principal: Principal = Depends(authorize("events", "read")),
) -> list[dict[str, Any]]:
    """The operator's feed of stored business events (partners' events in full; the operator's own without
    customer-data values), oldest first after the cursor ``after``."""
    return [
        {
            "feed_id": e.id,
            "id": e.event_id,
            "type": e.event_type,
            "contract_id": e.contract_id,
            "producer": e.producer,
            "occurred_at": e.occurred_at.isoformat(),
            "received_at": e.received_at.isoformat(),
            "data": e.data,
            "signature": e.signature,
        }
        for e in list_events(session, event_type=event_type, after=after, limit=limit)
    ]


@router.post("/partner/events", status_code=201, responses={200: {"description": "The same event, already stored."}})
def publish_partner_event(
    *,
    request: Request,
    background: BackgroundTasks,
    body: dict[str, Any] = Body(...),
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("partner.events", "write")),
    session: WriteSession,
) -> JSONResponse:
    """Publish one business event the partner produces under an approved contract (no customer data)."""
    return _published(request, ctx, session, principal=principal, body=body, background=background)


@router.post("/partner/event-subscriptions", status_code=201)
def subscribe(
    body: SubscriptionIn,
    session: WriteSession,
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("partner.webhooks", "write")),
) -> dict[str, Any]:
    """The partner's webhook endpoint for business events it consumes (listed with its other webhooks)."""
    if principal.partner_id is None:
        raise Forbidden()
    sub = delivery.subscribe(
        session,
        partner_id=principal.partner_id,
        url=body.url,
        event_types=body.events,
        allow_private=ctx.settings.webhook_allow_private,
    )
    return {"id": sub.id, "url": sub.url, "events": sub.event_types}


def _delivery(d: EventDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.payload["id"],
        "type": d.payload["type"],
        "version": d.payload["version"],
        "contract_id": d.contract_id,
        "partner_id": d.partner_id,
        "status": d.status,
        "attempts": d.attempts,
        "replays": d.replays,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "dropped_fields": d.dropped_fields,
        "created_at": d.created_at.isoformat(),
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
        "latency_ms": d.latency_ms,
        "within_requirement": d.within_requirement,
        "next_attempt_at": d.next_attempt_at.isoformat(),
    }


@router.get("/event-deliveries")
def list_deliveries(
    *,
    contract_id: int | None = Query(None, ge=1, le=2**31 - 1),
    partner_id: int | None = Query(None, ge=1, le=2**31 - 1),
    status: str | None = Query(None, pattern="^(pending|delivered|dead)$"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(read_session),
    principal: Principal = Depends(authorize("event_deliveries", "read")),
) -> list[dict[str, Any]]:
    """Business-event deliveries, newest first; ``status=dead`` is the dead-letter queue."""
    return [
        _delivery(d)
        for d in delivery.list_deliveries(
            session, contract_id=contract_id, partner_id=partner_id, status=status, limit=limit
        )
    ]


@router.post("/event-deliveries/{delivery_id}/replay")
def replay_delivery(
    delivery_id: Id,
    session: WriteSession,
    principal: Principal = Depends(authorize("event_deliveries", "write")),
) -> dict[str, Any]:
    """Queue a dead-lettered (or delivered) event for this consumer again: same id, same consented copy."""
    return _delivery(delivery.replay(session, delivery_id=delivery_id, principal=principal))


@router.get("/event-contracts/{contract_id}/deliveries")
def delivery_summary(
    contract_id: Id,
    session: Session = Depends(read_session),
    principal: Principal = Depends(authorize("event_deliveries", "read")),
) -> list[dict[str, Any]]:
    """Per consumer: delivered / pending / dead, retries, latency p50/p99 against the requirement, and how
    often each customer-data field was dropped for lack of consent (names and counts, never values)."""
    return delivery.summary(session, contract_id=contract_id)
