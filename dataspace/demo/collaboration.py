"""The demo's collaboration loop (the brief's scenario), played through the same domain calls the API makes.

An EV-charging partner (VoltGrid) and an insurer (Harbor Insurance) agree business event contracts with the
operator: ``battery_swap.booked`` (the operator's app tells VoltGrid a customer booked a swap; the customer's
EV ownership goes along only where the customer consented) and ``renewal_offer.accepted`` (the operator tells
the insurer an offer was accepted, linked to the real-time decision that proposed it). Each booking asks the
insurer's model, in a warm sandbox, for a renewal offer for that customer: customers who consented get one,
the others are ``not_permitted`` and the model never sees them. Some customers accept; their acceptance
events flow back to the insurer. The partners' webhook endpoints are simulated in this process (one
VoltGrid delivery keeps failing and is dead-lettered, to show retries and the dead-letter queue). Finally
the insurer asks for one DP release of its customer numbers, so both dashboards show the whole loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import DataspaceError
from dataspace.events import contracts as event_contracts
from dataspace.events import dashboard, delivery
from dataspace.events.contract_models import EventDelivery
from dataspace.events.publish import publish
from dataspace.events.triggers import decide_on
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from dataspace.realtime import DecisionService
from dataspace.subjects.models import Subject

log = logging.getLogger("dataspace.demo")

BOOKED, ACCEPTED = "battery_swap.booked", "renewal_offer.accepted"
BOOKINGS = 90  # customers among the first ones (a third consent to every feature the insurer's model reads)
ACCEPT_EVERY = 3  # one offer in three is accepted
STEWARD = Principal(subject="steward", role="steward", client_id="demo")

BOOKED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["booking_id", "station_id", "slot_start"],
    "properties": {
        "booking_id": {"type": "string", "description": "The booking's id in the operator's app."},
        "station_id": {"type": "string", "description": "The swap station the customer chose."},
        "slot_start": {"type": "string", "format": "date-time", "description": "Start of the booked slot."},
        "battery_kwh": {"type": "number", "minimum": 0, "x-unit": "kWh", "description": "Battery capacity."},
        "ev_owner": {
            "type": "boolean",
            "x-catalog-field": "ev_owner",
            "description": "Whether the customer owns the EV (sent only with the customer's consent).",
        },
    },
}
ACCEPTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["decision_id", "offer", "accepted_at"],
    "properties": {
        "decision_id": {
            "type": "integer",
            "x-decision-ref": True,
            "description": "The real-time decision whose offer the customer accepted (kept by the operator).",
        },
        "offer": {"type": "string", "enum": ["standard", "premium"], "description": "The renewal offer accepted."},
        "accepted_at": {"type": "string", "format": "date-time", "description": "When the customer accepted."},
    },
}


def _partner(ctx: Context, key: str) -> Principal | None:
    with ctx.db.session() as s:
        partner_id = s.scalar(select(Partner.id).where(Partner.key == key))
    if partner_id is None:
        return None
    return Principal(subject=key, role="partner", client_id=key, partner_id=partner_id, partner_key=key)


def _agree(ctx: Context, proposal: event_contracts.Proposal, partners: list[Principal]) -> int:
    with ctx.db.transaction() as s:
        contract_id = event_contracts.propose(s, principal=STEWARD, proposal=proposal).id
    for partner in partners:
        with ctx.db.transaction() as s:
            event_contracts.approve(s, principal=partner, contract_id=contract_id)
    return contract_id


class _Endpoints:
    """The partners' webhook endpoints, simulated: every delivery answers 204, except the booking chosen to
    fail at VoltGrid (503, until it is dead-lettered)."""

    def __init__(self, failing_url: str, failing_event: str) -> None:
        self.failing = (failing_url, failing_event)
        self.received = 0

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if (url, headers.get("dataspace-event-id")) == self.failing:
            return 503
        self.received += 1
        return 204


def play(ctx: Context, insurer_contract_id: int, progress: Callable[[str], None]) -> None:
    insurer = _partner(ctx, "harbor_insurance")
    charger = _partner(ctx, "voltgrid")
    if insurer is None or charger is None:
        return
    retry = {"backoff_seconds": 2, "multiplier": 2, "max_backoff_seconds": 60, "max_attempts": 3}
    _agree(
        ctx,
        event_contracts.Proposal(
            event_type=BOOKED,
            version="1.0.0",
            title="Battery swap booked",
            description="A customer booked a battery swap in the operator's app.",
            schema=BOOKED_SCHEMA,
            consumers=["voltgrid"],
            purpose="charging_booking",
            latency_ms=2000,
            retry=retry,
        ),
        [charger],
    )
    _agree(
        ctx,
        event_contracts.Proposal(
            event_type=ACCEPTED,
            version="1.0.0",
            title="Renewal offer accepted",
            description="A customer accepted the renewal offer the insurer's model proposed.",
            schema=ACCEPTED_SCHEMA,
            consumers=["harbor_insurance"],
            latency_ms=5000,
            retry=retry,
        ),
        [insurer],
    )
    urls = {
        charger.partner_id: "https://hooks.voltgrid.example/dataspace",
        insurer.partner_id: "https://api.harbor-insurance.example/events",
    }
    with ctx.db.transaction() as s:
        for partner_id, url in urls.items():
            assert partner_id is not None
            types = [BOOKED] if partner_id == charger.partner_id else [ACCEPTED]
            # Example hosts that resolve nowhere: registered without the public-address check (the demo's
            # deliveries below go to the simulated endpoints).
            delivery.subscribe(s, partner_id=partner_id, url=url, event_types=types, allow_private=True)
    progress("VoltGrid and Harbor Insurance agreed event contracts battery_swap.booked and renewal_offer.accepted")

    endpoints = _Endpoints(urls[charger.partner_id], "swap-0004")
    service = DecisionService(ctx.settings)
    decided: list[dict[str, Any]] = []
    refused = 0
    with ctx.db.session() as s:
        bookings = min(BOOKINGS, s.scalar(select(func.count()).select_from(Subject)) or 0)
    try:
        for i in range(bookings):
            event_id = f"swap-{i:04d}"
            now = utcnow()
            body = {
                "id": event_id,
                "type": BOOKED,
                "occurred_at": now.isoformat(),
                "customer_ref": f"C{i + 1:07d}",
                "data": {
                    "booking_id": f"BK-{20000 + i}",
                    "station_id": f"ST-{i % 7:02d}",
                    "slot_start": (now + timedelta(hours=2 + i % 5)).isoformat(),
                    "battery_kwh": 75.0,
                    "ev_owner": True,
                },
            }
            with ctx.db.transaction() as s:
                published = publish(s, ctx.keys, principal=STEWARD, body=body)
                subject_id = published.event.subject_id
            delivery.deliver_due(ctx.db, ctx.keys, send=endpoints)
            for answer in decide_on(
                service,
                ctx.db,
                ctx.keys,
                ctx.vault,
                ctx.writes,
                principal=STEWARD,
                event_id=event_id,
                event_type=BOOKED,
                subject_id=subject_id,
            ):
                if answer.get("error"):
                    progress(f"real-time decisions unavailable here ({answer['error']}): the loop stops at bookings")
                    return
                if answer["outcome"] == "decided":
                    decided.append(answer)
                else:
                    refused += 1
    finally:
        service.close()
    progress(
        f"{bookings} battery-swap bookings: {len(decided)} renewal offers decided in real time by the insurer's "
        f"model, {refused} customers without consent not scored"
    )
    accepted = 0
    for n, answer in enumerate(decided):
        if n % ACCEPT_EVERY:
            continue
        now = utcnow()
        body = {
            "id": f"accept-{answer['decision_id']}",
            "type": ACCEPTED,
            "occurred_at": now.isoformat(),
            "data": {"decision_id": answer["decision_id"], "offer": answer["decision"], "accepted_at": now.isoformat()},
        }
        with ctx.db.transaction() as s:
            publish(s, ctx.keys, principal=STEWARD, body=body)
        accepted += 1
    delivery.deliver_due(ctx.db, ctx.keys, send=endpoints)
    _dead_letter(ctx, endpoints)
    progress(
        f"{accepted} offers accepted; acceptance events delivered back to Harbor Insurance "
        f"({endpoints.received} deliveries to the two partners in all, one dead-lettered)"
    )
    try:
        with ctx.db.transaction() as s:
            dashboard.release(s, principal=insurer, contract_id=insurer_contract_id)
        progress("Harbor Insurance released its first DP numbers (customers decided, offers accepted) for ε 0.2")
    except DataspaceError as exc:
        log.warning("demo release skipped: %s", exc)


def _dead_letter(ctx: Context, endpoints: _Endpoints) -> None:
    """Retry the failing delivery per its contract (3 attempts) until it is dead-lettered."""
    with ctx.db.session() as s:
        ids = list(s.scalars(select(EventDelivery.id).where(EventDelivery.status == "pending")))
    later = utcnow()
    for _ in range(3):
        later += timedelta(minutes=2)
        delivery.deliver_due(ctx.db, ctx.keys, send=endpoints, now=later, delivery_ids=ids)
