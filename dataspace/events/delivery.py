"""Delivering business events to their consumers' webhooks: at least once, signed, retried per contract.

Invariants (what each consumer and the steward are promised under each failure):

- A delivery row exists iff its event committed (both are written in the publishing transaction).
- A round claims due deliveries with a lease before sending: if this process dies mid-send, the lease
  expires and another round sends again (at-least-once; the consumer dedupes by the event ``id``, which never
  changes). On PostgreSQL concurrent dispatchers skip each other's claimed rows.
- The body is signed like every webhook of this server (Ed25519 over ``<timestamp>.<body>``, header
  ``Dataspace-Signature``); the endpoint is the consumer's active webhook subscription for the event type.
- Only a 2xx answer counts as delivered; then the latency (received by the server -> acknowledged by the
  consumer) is stored with whether it met the contract's requirement. Any other outcome (error status,
  connection refused or reset, timeout, no subscribed endpoint) is retried after the contract's backoff;
  after its ``max_attempts`` the delivery is dead-lettered, until a steward replays it.
- An attempt that ends after its delivery was settled by another round (its lease ran out) changes nothing,
  except that a late success of a dead-lettered delivery counts as delivered.
- With a broker configured, ``dataspace.events.broker`` carries the same deliveries through RabbitMQ under
  the same rules (this module's sending and recording).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.db import Database, utcnow
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.events.contract_models import EventContract, EventDelivery
from dataspace.events.contracts import RetryPolicy
from dataspace.events.models import WebhookSubscription
from dataspace.events.service import Sender, check_url, http_sender, sign
from dataspace.keys import KeyRing
from dataspace.principal import Principal

LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class _Attempt:
    delivery_id: int
    url: str | None
    body: bytes
    event_id: str
    event_type: str
    version: str


def _endpoint(session: Session, partner_id: int, event_type: str) -> str | None:
    for sub in session.scalars(
        select(WebhookSubscription)
        .where(WebhookSubscription.partner_id == partner_id, WebhookSubscription.active.is_(True))
        .order_by(WebhookSubscription.id.desc())
    ):
        if event_type in sub.event_types:
            return sub.url
    return None


def _claim(db: Database, now: datetime, limit: int, ids: Sequence[int] | None) -> list[_Attempt]:
    with db.transaction() as session:
        stmt = (
            select(EventDelivery)
            .where(EventDelivery.status == "pending", EventDelivery.next_attempt_at <= now)
            .order_by(EventDelivery.next_attempt_at, EventDelivery.id)
            .limit(limit)
        )
        if ids is not None:
            stmt = stmt.where(EventDelivery.id.in_(list(ids)))
        if not db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        attempts = []
        for delivery in session.scalars(stmt):
            delivery.attempts += 1
            delivery.next_attempt_at = now + LEASE  # if we die now, the next round after the lease sends again
            attempts.append(_attempt(session, delivery))
        return attempts


def deliver_due(
    db: Database,
    keys: KeyRing,
    *,
    send: Sender | None = None,
    now: datetime | None = None,
    limit: int = 100,
    delivery_ids: Sequence[int] | None = None,
) -> dict[str, int]:
    """One round: claim due deliveries (only ``delivery_ids`` when given), send, record. Counts by outcome.
    ``now`` is injectable for tests; latency is measured on the real clock when it is not given."""
    fixed_now = now
    now = now or utcnow()
    send = send or http_sender()
    counts = {"delivered": 0, "retry": 0, "dead": 0}
    for attempt in _claim(db, now, limit, delivery_ids):
        ts = int(time.time()) if fixed_now is None else int(now.timestamp())
        status, error = _send(keys, attempt, send, ts)
        done = fixed_now if fixed_now is not None else utcnow()
        with db.transaction() as session:
            outcome = _record(session, attempt.delivery_id, status, error, done)
        counts[outcome] += 1
    return counts


def _send(keys: KeyRing, attempt: _Attempt, send: Sender, ts: int) -> tuple[int | None, str | None]:
    """POST one signed delivery: (HTTP status, None) or (None, what went wrong)."""
    if attempt.url is None:
        return None, "no_endpoint"
    headers = {
        "content-type": "application/json",
        "dataspace-event-id": attempt.event_id,
        "dataspace-event-type": attempt.event_type,
        "dataspace-contract-version": attempt.version,
        "dataspace-signature": sign(keys, attempt.body, ts),
    }
    try:
        return send(attempt.url, attempt.body, headers), None
    except httpx.HTTPError as exc:
        return None, type(exc).__name__


def _attempt(session: Session, delivery: EventDelivery) -> _Attempt:
    payload = delivery.payload
    return _Attempt(
        delivery.id,
        _endpoint(session, delivery.partner_id, payload["type"]),
        orjson.dumps(payload),
        payload["id"],
        payload["type"],
        payload["version"],
    )


def _record(session: Session, delivery_id: int, status: int | None, error: str | None, done: datetime) -> str:
    delivery = session.get(EventDelivery, delivery_id, with_for_update=True)
    assert delivery is not None
    contract = session.get(EventContract, delivery.contract_id)
    assert contract is not None
    policy = RetryPolicy.of(contract.retry)
    ok = status is not None and 200 <= status < 300
    if delivery.status == "delivered" or (delivery.status == "dead" and not ok):
        # A stale attempt (its lease ran out and another round settled the delivery meanwhile): the settled
        # outcome stands. A late success of a dead-lettered one does count: the consumer has the event.
        return str(delivery.status)
    delivery.last_status, delivery.last_error = status, error if error is None else error[:200]
    if ok:
        delivery.status, delivery.delivered_at = "delivered", done
        delivery.latency_ms = max((done - delivery.created_at).total_seconds() * 1000.0, 0.0)
        delivery.within_requirement = delivery.latency_ms <= contract.latency_ms
        return "delivered"
    if delivery.last_error is None:
        delivery.last_error = f"http_{status}"
    if delivery.attempts >= policy.max_attempts:
        delivery.status = "dead"
        return "dead"
    delivery.next_attempt_at = done + timedelta(seconds=policy.delay(delivery.attempts))
    return "retry"


# --- steward views ----------------------------------------------------------------------------------
def list_deliveries(
    session: Session,
    *,
    contract_id: int | None = None,
    partner_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[EventDelivery]:
    stmt = select(EventDelivery).order_by(EventDelivery.id.desc()).limit(limit)
    if contract_id is not None:
        stmt = stmt.where(EventDelivery.contract_id == contract_id)
    if partner_id is not None:
        stmt = stmt.where(EventDelivery.partner_id == partner_id)
    if status is not None:
        stmt = stmt.where(EventDelivery.status == status)
    return list(session.scalars(stmt))


def replay(
    session: Session, *, delivery_id: int, principal: Principal | None = None, now: datetime | None = None
) -> EventDelivery:
    """Send a dead-lettered (or delivered) event again, with the same id and the same consented copy."""
    delivery = session.get(EventDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFound("no such delivery")
    if delivery.status == "pending":
        raise Conflict("the delivery is still pending")
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, now or utcnow()
    delivery.last_error, delivery.replays = None, delivery.replays + 1
    record_event(
        session,
        actor=principal,
        action="event_delivery.replayed",
        target=f"event_delivery:{delivery.id}",
        details={"contract_id": delivery.contract_id, "partner_id": delivery.partner_id, "replays": delivery.replays},
    )
    return delivery


def summary(session: Session, *, contract_id: int) -> list[dict[str, Any]]:
    """Per consumer of one contract version: deliveries by status, latency p50/p99 against the requirement,
    attempts beyond the first, and how often each customer-data field was dropped for lack of consent."""
    contract = session.get(EventContract, contract_id)
    if contract is None:
        raise NotFound("no such event contract")
    rows = list(session.scalars(select(EventDelivery).where(EventDelivery.contract_id == contract_id)))
    out = []
    for partner_id in contract.consumer_partner_ids:
        mine = [d for d in rows if d.partner_id == partner_id]
        latencies = sorted(d.latency_ms for d in mine if d.latency_ms is not None)
        dropped: dict[str, int] = {}
        for d in mine:
            for name in d.dropped_fields:
                dropped[name] = dropped.get(name, 0) + 1
        out.append(
            {
                "partner_id": partner_id,
                "events": len(mine),
                "delivered": sum(d.status == "delivered" for d in mine),
                "pending": sum(d.status == "pending" for d in mine),
                "dead": sum(d.status == "dead" for d in mine),
                "retries": sum(max(d.attempts - 1, 0) for d in mine),
                "latency_requirement_ms": contract.latency_ms,
                "latency_p50_ms": _pct(latencies, 0.5),
                "latency_p99_ms": _pct(latencies, 0.99),
                "within_requirement": sum(bool(d.within_requirement) for d in mine),
                "dropped_fields": dropped,
            }
        )
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def subscribe(
    session: Session, *, partner_id: int, url: str, event_types: list[str], allow_private: bool = False
) -> WebhookSubscription:
    """A consumer's webhook endpoint for business event types it consumes under an approved contract."""
    consumed = {
        c.event_type
        for c in session.scalars(select(EventContract).where(EventContract.status == "approved"))
        if partner_id in c.consumer_partner_ids
    }
    unknown = sorted(set(event_types) - consumed)
    if unknown or not event_types:
        raise InvalidInput(
            f"you consume no approved event contract of type(s) {unknown}" if unknown else "name an event type"
        )
    sub = WebhookSubscription(
        partner_id=partner_id,
        url=check_url(url, allow_private=allow_private),
        event_types=sorted(set(event_types)),
        active=True,
    )
    session.add(sub)
    session.flush()
    return sub
