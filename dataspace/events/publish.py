"""Publishing a business event under its approved contract.

What a producer and each consumer are promised:

- Validation: the event is checked against its contract version (envelope and JSON Schema, formats
  included); a refusal lists every violation, with its path.
- Deduplication by id, per producer: the same id with the same body answers the stored event again
  (idempotent); the same id with a different body is a conflict. The body is compared by a keyed digest, so
  the stored digest reveals nothing about customer values.
- Durability: the event and one delivery per consumer (the outbox) are written in the caller's transaction;
  the producer is acknowledged only after it commits. The server signs a receipt of what it stored (Ed25519).
- Consent: a field carrying customer data (``x-catalog-field``) reaches a consumer only if that customer
  permits that consumer that catalog field for the contract's purpose at publication time, at the field's
  granularity; otherwise it is dropped from that consumer's copy and counted (names only) for the steward.
  The customer (``customer_ref``, operator events only) appears to a partner only as that partner's
  pseudonym, and only alongside at least one permitted field: an event none of whose customer data may reach
  a partner (or that carries none) names no customer to it. Real-time decisions still see the customer.
- The customer's own identifier (``customer_ref``) and the customer-data values are not kept with the
  stored event: only each consumer's permitted copy is, until it is delivered.
- An outcome event links to the real-time decision it answers through an ``x-decision-ref`` field: it must
  name a decided decision (about the event's customer, when it names one); the link stays with the stored
  event for the operator's collaboration dashboard and is left out of every partner's copy.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consent import Granularity
from dataspace.db import utcnow
from dataspace.emission.transforms import pseudonym
from dataspace.errors import ConcurrentChange, Conflict, Forbidden, InvalidInput, NotFound
from dataspace.events.contract_models import BusinessEvent, EventContract, EventDelivery
from dataspace.events.contracts import VERSION_PATTERN, catalog_fields, decision_refs
from dataspace.grants.evaluation import is_permitted
from dataspace.keys import KeyRing
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from dataspace.realtime.models import RealtimeDecision
from dataspace.subjects.models import Subject
from transparency.canonical import canonical_bytes, canonical_json

PSEUDONYM_SCOPE = "events"  # stable across event types: a partner links one customer's events, nothing more
ENVELOPE_KEYS = {"id", "type", "version", "occurred_at", "customer_ref", "data"}

# jsonschema checks "date-time" only with an optional package installed; this check needs none.
FORMATS = FormatChecker()


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        raise ValueError("not an RFC 3339 date-time")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


FORMATS.checks("date-time", raises=ValueError)(_date_time)


@dataclass
class Published:
    event: BusinessEvent
    contract: EventContract
    duplicate: bool
    deliveries: list[EventDelivery] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.event.event_id,
            "type": self.event.event_type,
            "version": self.contract.version,
            "contract_id": self.contract.id,
            "received_at": self.event.received_at.isoformat(),
            "duplicate": self.duplicate,
            "signature": self.event.signature,
            "consumers": len(self.deliveries) if not self.duplicate else None,
        }


def producer_of(principal: Principal) -> str:
    if principal.role == "steward":
        return "operator"
    if principal.role == "partner" and principal.partner_id is not None:
        return f"partner:{principal.partner_id}"
    raise Forbidden()


def _contract(session: Session, event_type: Any, version: Any, principal: Principal) -> EventContract:
    if not isinstance(event_type, str):
        raise InvalidInput("1 violation(s)", extra={"errors": [{"path": "type", "problem": "required string"}]})
    stmt = select(EventContract).where(EventContract.event_type == event_type, EventContract.status == "approved")
    if version is not None:
        m = VERSION_PATTERN.match(version) if isinstance(version, str) else None
        if m is None:
            raise InvalidInput(
                "1 violation(s)", extra={"errors": [{"path": "version", "problem": "MAJOR.MINOR.PATCH"}]}
            )
        major, minor, patch = map(int, m.groups())
        stmt = stmt.where(EventContract.major == major, EventContract.minor == minor, EventContract.patch == patch)
    contract = session.scalars(
        stmt.order_by(EventContract.major.desc(), EventContract.minor.desc(), EventContract.patch.desc()).limit(1)
    ).first()
    producer = None if principal.role == "steward" else principal.partner_id
    if contract is None or contract.producer_partner_id != producer:
        # The same answer whether the type is unknown or someone else's to produce.
        raise NotFound(f"no approved event contract lets you publish {event_type!r} {version or ''}".rstrip())
    return contract


def _violations(contract: EventContract, body: dict[str, Any]) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    for key in sorted(set(body) - ENVELOPE_KEYS):
        errors.append({"path": key, "problem": "unknown envelope member"})
    event_id = body.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128 or not event_id.isprintable():
        errors.append({"path": "id", "problem": "required: 1 to 128 printable characters, stable across retries"})
    occurred = body.get("occurred_at")
    try:
        if not isinstance(occurred, str) or datetime.fromisoformat(occurred.replace("Z", "+00:00")).tzinfo is None:
            raise ValueError
    except ValueError:
        errors.append({"path": "occurred_at", "problem": "required: RFC 3339 date-time with an offset"})
    ref = body.get("customer_ref")
    customer_data = catalog_fields(contract.schema)
    if ref is not None and (not isinstance(ref, str) or not 1 <= len(ref) <= 256):
        errors.append({"path": "customer_ref", "problem": "1 to 256 characters"})
    if ref is not None and contract.producer_partner_id is not None:
        errors.append({"path": "customer_ref", "problem": "a partner's events name no customer"})
    data = body.get("data")
    if not isinstance(data, dict):
        errors.append({"path": "data", "problem": "required object"})
        return errors
    errors += [
        {"path": p, "problem": "not a finite number (JSON has no NaN or Infinity)"} for p in _non_finite(body, "")
    ]
    if ref is None and any(name in data for name in customer_data):
        errors.append({"path": "customer_ref", "problem": "required when the event carries customer data"})
    validator = Draft202012Validator(contract.schema, format_checker=FORMATS)
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        path = "/".join(str(p) for p in error.absolute_path)
        errors.append({"path": "data" + ("/" + path if path else ""), "problem": error.message[:300]})
    return errors


def _non_finite(node: Any, path: str) -> list[str]:
    if isinstance(node, float) and not math.isfinite(node):
        return [path or "(root)"]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _non_finite(v, f"{path}/{k}" if path else str(k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _non_finite(v, f"{path}/{i}")]
    return []


def publish(
    session: Session, keys: KeyRing, *, principal: Principal, body: dict[str, Any], now: datetime | None = None
) -> Published:
    """Validate, deduplicate, store, sign and queue one event for each consumer (module docstring)."""
    producer = producer_of(principal)
    now = now or utcnow()
    contract = _contract(session, body.get("type"), body.get("version"), principal)
    errors = _violations(contract, body)
    if errors:
        raise InvalidInput(
            f"{len(errors)} violation(s) of {contract.event_type} {contract.version}",
            extra={"errors": errors[:200], "error_count": len(errors)},
        )
    event_id: str = body["id"]
    digest = keys.blind_index("business-event/v1/" + canonical_json(body))
    existing = session.scalar(
        select(BusinessEvent).where(BusinessEvent.producer == producer, BusinessEvent.event_id == event_id)
    )
    if existing is not None:
        if existing.body_digest != digest:
            raise Conflict(f"event id {event_id!r} was already published with a different body")
        stored = session.get(EventContract, existing.contract_id)
        assert stored is not None
        return Published(existing, stored, duplicate=True)

    subject_id = None
    if body.get("customer_ref") is not None:
        subject_id = session.scalar(
            select(Subject.id).where(Subject.blind_ref == keys.blind_index(body["customer_ref"]))
        )
        if subject_id is None:
            raise InvalidInput(
                "1 violation(s)", extra={"errors": [{"path": "customer_ref", "problem": "unknown customer"}]}
            )
    customer_data = catalog_fields(contract.schema)
    data: dict[str, Any] = body["data"]
    _check_decision_refs(session, contract, data, subject_id)
    occurred_at = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00"))
    record = {
        "id": event_id,
        "type": contract.event_type,
        "version": contract.version,
        "producer": producer,
        "occurred_at": occurred_at.isoformat(),
        "received_at": now.isoformat(),
        "body_digest": digest,
    }
    key = keys.signing_key
    signature = f"kid={key.kid},sig={base64.b64encode(key.sign(canonical_bytes(record))).decode()}"
    event = BusinessEvent(
        event_id=event_id,
        producer=producer,
        contract_id=contract.id,
        event_type=contract.event_type,
        subject_id=subject_id,
        body_digest=digest,
        data={k: v for k, v in data.items() if k not in customer_data},
        occurred_at=occurred_at,
        received_at=now,
        signature=signature,
    )
    session.add(event)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # the same id published concurrently: the retry gets the stored answer
        raise ConcurrentChange("the same event id is being published concurrently; retry") from exc

    deliveries = []
    partners = {p.id: p for p in session.scalars(select(Partner).where(Partner.id.in_(contract.consumer_partner_ids)))}
    for partner_id in contract.consumer_partner_ids:
        partner = partners[partner_id]
        copy, dropped = _consented_copy(
            session, contract=contract, data=data, subject_id=subject_id, partner=partner, now=now
        )
        envelope: dict[str, Any] = {
            "id": event_id,
            "type": contract.event_type,
            "version": contract.version,
            "occurred_at": record["occurred_at"],
            "data": copy,
        }
        if subject_id is not None and any(name in copy for name in customer_data):
            envelope["subject"] = pseudonym(keys.partner_pseudonym_key(partner.key), PSEUDONYM_SCOPE, subject_id)
        delivery = EventDelivery(
            event_id=event.id,
            contract_id=contract.id,
            partner_id=partner_id,
            payload=envelope,
            dropped_fields=dropped,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            replays=0,
        )
        session.add(delivery)
        deliveries.append(delivery)
    session.flush()
    return Published(event, contract, duplicate=False, deliveries=deliveries)


def _check_decision_refs(
    session: Session, contract: EventContract, data: dict[str, Any], subject_id: int | None
) -> None:
    """An outcome event names a decided real-time decision, about the event's customer when it names one."""
    errors = []
    for name in decision_refs(contract.schema):
        if name not in data:
            continue
        decision = session.get(RealtimeDecision, data[name])
        if decision is None or decision.outcome != "decided":
            errors.append({"path": f"data/{name}", "problem": "no such decided real-time decision"})
        elif subject_id is not None and decision.subject_id != subject_id:
            errors.append({"path": f"data/{name}", "problem": "the decision is about another customer"})
    if errors:
        raise InvalidInput(
            f"{len(errors)} violation(s) of {contract.event_type} {contract.version}", extra={"errors": errors}
        )


def _consented_copy(
    session: Session,
    *,
    contract: EventContract,
    data: dict[str, Any],
    subject_id: int | None,
    partner: Partner,
    now: datetime,
) -> tuple[dict[str, Any], list[str]]:
    """The event's data as ``partner`` may see it, and the names of the fields dropped for lack of consent."""
    customer_data = catalog_fields(contract.schema)
    internal = set(decision_refs(contract.schema))  # the operator's link to its decision: never to a partner
    copy = {k: v for k, v in data.items() if k not in customer_data and k not in internal}
    dropped = []
    for name, spec in customer_data.items():
        if name not in data:
            continue
        allowed = (
            subject_id is not None
            and contract.purpose_key is not None
            and partner.status == "active"
            and is_permitted(
                session,
                subject_id=subject_id,
                field_key=spec["field"],
                partner_key=partner.key,
                purpose_key=contract.purpose_key,
                at=now,
                granularity=Granularity(spec["granularity"]),
            )
        )
        if allowed:
            copy[name] = data[name]
        else:
            dropped.append(name)
    return copy, dropped


def list_events(
    session: Session, *, event_type: str | None = None, after: int = 0, limit: int = 100
) -> list[BusinessEvent]:
    """Stored events in the order they were received, after the cursor ``after`` (the operator's feed:
    partners' events in full, the operator's own without customer-data values)."""
    stmt = select(BusinessEvent).where(BusinessEvent.id > after).order_by(BusinessEvent.id).limit(limit)
    if event_type is not None:
        stmt = stmt.where(BusinessEvent.event_type == event_type)
    return list(session.scalars(stmt))


def erase_subject(session: Session, subject_id: int) -> int:
    """On the customer's erasure (caller's transaction): their customer-data values and pseudonym leave every
    stored copy of their events (a pending delivery then carries only the business facts), and the events
    no longer name them. Returns the number of events touched."""
    events = list(session.scalars(select(BusinessEvent).where(BusinessEvent.subject_id == subject_id)))
    for event in events:
        contract = session.get(EventContract, event.contract_id)
        customer_data = catalog_fields(contract.schema) if contract is not None else {}
        for d in session.scalars(select(EventDelivery).where(EventDelivery.event_id == event.id)):
            payload = {k: v for k, v in d.payload.items() if k != "subject"}
            payload["data"] = {k: v for k, v in payload["data"].items() if k not in customer_data}
            d.payload = payload
        event.subject_id = None
    return len(events)
