"""Transactional outbox and signed webhook delivery.

``emit`` writes the event in the caller's transaction. The dispatcher then (1) fans committed events out to
matching subscriptions, (2) claims due deliveries with a lease (so a crashed dispatcher's claim expires and
the delivery is retried: at-least-once), (3) POSTs the envelope signed with Ed25519 and records the outcome,
retrying with exponential backoff and dead-lettering after ``MAX_ATTEMPTS``. Receivers dedupe by event id.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from dataspace.db import Database, insert_later, utcnow
from dataspace.errors import Fault, InvalidInput, NotFound
from dataspace.events.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from dataspace.events.schemas import CONTRACTS, PARTNER_EVENT_TYPES, Payload
from dataspace.keys import KeyRing
from dataspace.observability import metrics

MAX_ATTEMPTS = 8
BASE_DELAY = 2.0
MAX_DELAY = 3600.0
LEASE = timedelta(seconds=60)
SIGNATURE_TOLERANCE = 300


# --- emitting ---------------------------------------------------------------------------------------
def emit(
    session: Session,
    event_type: str,
    data: Mapping[str, Any] | Payload,
    *,
    partner_id: int | None = None,
    version: int = 1,
    now: datetime | None = None,
) -> str:
    """Validate ``data`` against the event contract and write it to the outbox (caller's transaction)."""
    model = CONTRACTS.get((event_type, version))
    if model is None:
        raise ValueError(f"no event contract {event_type} v{version}")
    payload = data if isinstance(data, Payload) else model.model_validate(dict(data))
    event_id = str(uuid.uuid4())
    insert_later(
        session,
        _OUTBOX,
        {
            "event_id": event_id,
            "type": event_type,
            "version": version,
            "partner_id": partner_id,
            "data": payload.model_dump(mode="json"),
            "occurred_at": now or utcnow(),
            "fanned_out_at": None,
        },
    )
    return event_id


_OUTBOX: Table = OutboxEvent.__table__  # type: ignore[assignment]


def envelope(event: OutboxEvent) -> dict[str, Any]:
    return {
        "id": event.event_id,
        "type": event.type,
        "version": event.version,
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }


# --- subscriptions ----------------------------------------------------------------------------------
def check_url(url: str, *, allow_private: bool = False) -> str:
    """Only https to public addresses, so a partner cannot aim our server at internal services (SSRF).
    ``allow_private`` (tests, single-host setups) also admits http and loopback/private addresses."""
    parts = urlsplit(url)
    if parts.scheme not in (("https", "http") if allow_private else ("https",)) or not parts.hostname:
        raise InvalidInput("webhook URL must be an absolute https URL")
    if not allow_private:
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise InvalidInput("webhook host does not resolve") from exc
        for info in infos:
            addr = ipaddress.ip_address(info[4][0])
            if addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved or addr.is_multicast:
                raise InvalidInput("webhook URL must point to a public address")
    return url


def subscribe(
    session: Session, *, partner_id: int, url: str, event_types: list[str], allow_private: bool = False
) -> WebhookSubscription:
    unknown = sorted(set(event_types) - PARTNER_EVENT_TYPES)
    if unknown or not event_types:
        raise InvalidInput(
            f"event type(s) {unknown} are not delivered to partners; partners may subscribe to "
            f"{sorted(PARTNER_EVENT_TYPES)}"
            if unknown
            else "name at least one event type"
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


def unsubscribe(session: Session, *, partner_id: int, subscription_id: int) -> None:
    sub = session.get(WebhookSubscription, subscription_id)
    if sub is None or sub.partner_id != partner_id:
        raise NotFound("no such webhook subscription")
    sub.active = False


def list_subscriptions(session: Session, *, partner_id: int) -> list[WebhookSubscription]:
    return list(
        session.scalars(
            select(WebhookSubscription)
            .where(WebhookSubscription.partner_id == partner_id, WebhookSubscription.active.is_(True))
            .order_by(WebhookSubscription.id)
        )
    )


def list_deliveries(
    session: Session, *, partner_id: int, status: str | None = None, limit: int = 100, now: datetime | None = None
) -> list[tuple[WebhookDelivery, OutboxEvent]]:
    """The partner's deliveries, newest first; an event dated in the future (a job outcome that shows at
    the next release tick, ``dataspace.jobs.outcomes``) is not listed before its time."""
    stmt = (
        select(WebhookDelivery, OutboxEvent)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookSubscription.partner_id == partner_id, OutboxEvent.occurred_at <= (now or utcnow()))
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return [(d, e) for d, e in session.execute(stmt).all()]


def replay(session: Session, *, partner_id: int, delivery_id: int, now: datetime | None = None) -> WebhookDelivery:
    """Send a delivery again (dead-lettered or already delivered): same event id, so receivers can dedupe."""
    delivery = session.get(WebhookDelivery, delivery_id)
    sub = session.get(WebhookSubscription, delivery.subscription_id) if delivery else None
    if delivery is None or sub is None or sub.partner_id != partner_id:
        raise NotFound("no such delivery")
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, now or utcnow()
    delivery.last_error = None
    return delivery


# --- signing ----------------------------------------------------------------------------------------
def sign(keys: KeyRing, body: bytes, timestamp: int) -> str:
    key = keys.signing_key
    sig = key.sign(b"%d." % timestamp + body)
    return f"t={timestamp},kid={key.kid},sig={base64.b64encode(sig).decode()}"


class InvalidSignature(Fault):
    """The webhook signature did not verify (no detail on purpose)."""


def verify_signature(
    header: str,
    body: bytes,
    public_keys: Mapping[str, bytes],
    *,
    now: float | None = None,
    tolerance: int = SIGNATURE_TOLERANCE,
) -> None:
    """For receivers: check ``Dataspace-Signature`` against the published keys and the timestamp window."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        ts = int(fields["t"])
        public = public_keys[fields["kid"]]
        VerifyKey(public).verify(b"%d." % ts + body, base64.b64decode(fields["sig"], validate=True))
    except (KeyError, ValueError, BadSignatureError) as exc:
        raise InvalidSignature from exc
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        raise InvalidSignature


# --- dispatching ------------------------------------------------------------------------------------
def fan_out(session: Session, *, now: datetime | None = None, limit: int = 1000) -> int:
    """Create one delivery per (committed event of a partner-deliverable type, matching active subscription
    of its partner), due at the event's ``occurred_at`` if that is later (job outcomes are dated at their
    release tick). Consent events are never delivered to partners (``PARTNER_EVENT_TYPES``).

    Set-based, as every consent change emits an event: one read of the batch, one of the subscriptions of
    its partners, one insert, one update. On PostgreSQL the batch's rows are locked and locked ones skipped,
    so the dispatchers of several replicas take different events instead of racing on the same ones.
    """
    now = now or utcnow()
    stmt = (
        select(OutboxEvent.id, OutboxEvent.partner_id, OutboxEvent.type)
        .where(OutboxEvent.fanned_out_at.is_(None))
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update(skip_locked=True)
    batch = session.execute(stmt).all()
    if not batch:
        return 0
    due = dict(
        session.execute(
            select(OutboxEvent.id, OutboxEvent.occurred_at).where(OutboxEvent.id.in_([e for e, _, _ in batch]))
        ).all()
    )
    subscriptions: dict[int, list[tuple[int, list[str]]]] = {}
    partner_ids = sorted({partner_id for _, partner_id, _ in batch if partner_id is not None})
    if partner_ids:
        for sub_id, partner_id, types in session.execute(
            select(WebhookSubscription.id, WebhookSubscription.partner_id, WebhookSubscription.event_types)
            .where(WebhookSubscription.partner_id.in_(partner_ids), WebhookSubscription.active.is_(True))
            .order_by(WebhookSubscription.id)
        ):
            subscriptions.setdefault(partner_id, []).append((sub_id, types))
    deliveries = [
        {
            "event_id": event_id,
            "subscription_id": sub_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": max(now, due[event_id]),
        }
        for event_id, partner_id, event_type in batch
        if partner_id is not None and event_type in PARTNER_EVENT_TYPES
        for sub_id, types in subscriptions.get(partner_id, ())
        if event_type in types
    ]
    if deliveries:
        session.execute(insert(WebhookDelivery), deliveries)
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_([event_id for event_id, _, _ in batch]))
        .values(fanned_out_at=now)
        .execution_options(synchronize_session=False)
    )
    return len(deliveries)


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    url: str
    body: bytes
    event_id: str


Sender = Callable[[str, bytes, dict[str, str]], int]


def http_sender(timeout: float = 5.0) -> Sender:
    def send(url: str, body: bytes, headers: dict[str, str]) -> int:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            return client.post(url, content=body, headers=headers).status_code

    return send


def _claim(db: Database, now: datetime, limit: int) -> list[Attempt]:
    with db.transaction() as session:
        stmt = (
            select(WebhookDelivery)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
        )
        if not db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        attempts = []
        for delivery in session.scalars(stmt):
            event = session.get(OutboxEvent, delivery.event_id)
            sub = session.get(WebhookSubscription, delivery.subscription_id)
            assert event is not None
            assert sub is not None
            delivery.attempts += 1
            delivery.next_attempt_at = now + LEASE  # the lease: if we die now, it is retried after this
            attempts.append(Attempt(delivery.id, sub.url, orjson.dumps(envelope(event)), event.event_id))
        return attempts


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(BASE_DELAY * 2 ** (attempts - 1), MAX_DELAY))


def deliver_due(
    db: Database, keys: KeyRing, *, send: Sender | None = None, now: datetime | None = None, limit: int = 100
) -> dict[str, int]:
    """One dispatcher round: fan out, claim, send, record. Returns counts by outcome."""
    now = now or utcnow()
    send = send or http_sender()
    with db.transaction() as session:
        fan_out(session, now=now)
    counts = {"delivered": 0, "retry": 0, "dead": 0}
    for attempt in _claim(db, now, limit):
        ts = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "dataspace-event-id": attempt.event_id,
            "dataspace-signature": sign(keys, attempt.body, ts),
        }
        status: int | None = None
        error: str | None = None
        sent = time.perf_counter()
        try:
            status = send(attempt.url, attempt.body, headers)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        took = time.perf_counter() - sent
        with db.transaction() as session:
            delivery = session.get(WebhookDelivery, attempt.delivery_id)
            assert delivery is not None
            delivery.last_status, delivery.last_error = status, error
            if status is not None and 200 <= status < 300:
                delivery.status, delivery.delivered_at = "delivered", now
                outcome = "delivered"
            elif delivery.attempts >= MAX_ATTEMPTS:
                delivery.status = "dead"
                outcome = "dead"
            else:
                delivery.next_attempt_at = now + backoff(delivery.attempts)
                outcome = "retry"
        counts[outcome] += 1
        metrics.webhook_delivered(outcome, took)
    return counts
