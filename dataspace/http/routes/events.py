"""Event contracts (public schemas) and the partner's webhook subscriptions, dead letters and replay."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from dataspace.context import Context
from dataspace.errors import NotFound
from dataspace.events import service
from dataspace.events.schemas import DELIVERY, all_schemas
from dataspace.http.deps import WriteSession, authorize, get_context, partner_of, read_session
from dataspace.http.params import Id, Version
from dataspace.jobs.outcomes import ReleaseSchedule
from dataspace.principal import Principal

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events/schemas")
def event_schemas() -> dict[str, Any]:
    """Every versioned event contract as JSON Schema, with the delivery promises."""
    return {"delivery": DELIVERY, "schemas": all_schemas()}


@router.get("/events/schemas/{event_type}/v{version}")
def event_schema(event_type: str, version: Version) -> dict[str, Any]:
    schema = all_schemas().get(f"{event_type}/v{version}")
    if schema is None:
        raise NotFound(f"no event contract {event_type} v{version}")
    return schema


class SubscriptionIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=20)


@router.post("/partner/webhooks", status_code=201)
def subscribe(
    body: SubscriptionIn,
    session: WriteSession,
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("partner.webhooks", "write")),
) -> dict[str, Any]:
    sub = service.subscribe(
        session,
        partner_id=partner_of(principal),
        url=body.url,
        event_types=body.events,
        allow_private=ctx.settings.webhook_allow_private,
    )
    return {"id": sub.id, "url": sub.url, "events": sub.event_types}


@router.get("/partner/webhooks")
def subscriptions(
    session: Session = Depends(read_session), principal: Principal = Depends(authorize("partner.webhooks", "read"))
) -> list[dict[str, Any]]:
    return [
        {"id": s.id, "url": s.url, "events": s.event_types}
        for s in service.list_subscriptions(session, partner_id=partner_of(principal))
    ]


@router.delete("/partner/webhooks/{subscription_id}", status_code=204)
def unsubscribe(
    subscription_id: Id,
    session: WriteSession,
    principal: Principal = Depends(authorize("partner.webhooks", "write")),
) -> None:
    service.unsubscribe(session, partner_id=partner_of(principal), subscription_id=subscription_id)


@router.get("/partner/webhooks/deliveries")
def deliveries(
    status: str | None = Query(None, pattern="^(pending|delivered|dead)$"),
    session: Session = Depends(read_session),
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("partner.webhooks", "read")),
) -> list[dict[str, Any]]:
    """Deliveries, newest first; ``status=dead`` is the dead-letter list. Events dated in the future (job
    outcomes waiting for their release tick) are not listed yet; times are at the release tick's granularity."""
    schedule = ReleaseSchedule.of(ctx.settings)
    return [
        {
            "id": d.id,
            "event_id": e.event_id,
            "type": e.type,
            "status": d.status,
            "attempts": d.attempts,
            "last_status": d.last_status,
            "last_error": d.last_error,
            "occurred_at": schedule.floor(e.occurred_at).isoformat(),
            "next_attempt_at": schedule.floor(d.next_attempt_at).isoformat(),
        }
        for d, e in service.list_deliveries(session, partner_id=partner_of(principal), status=status)
    ]


@router.post("/partner/webhooks/deliveries/{delivery_id}/replay")
def replay(
    delivery_id: Id,
    session: WriteSession,
    principal: Principal = Depends(authorize("partner.webhooks", "write")),
) -> dict[str, Any]:
    d = service.replay(session, partner_id=partner_of(principal), delivery_id=delivery_id)
    return {"id": d.id, "status": d.status}
