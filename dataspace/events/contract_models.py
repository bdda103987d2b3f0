"""Business event contracts agreed between the operator and partners, the events published under them, and
their per-consumer deliveries (the business events' outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


class EventContract(Base):
    """One version of a business event contract. Versions of one type share ``event_type``; each is
    immutable once proposed (a change is a new version)."""

    __tablename__ = "event_contracts"
    __table_args__ = (UniqueConstraint("event_type", "major", "minor", "patch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    major: Mapped[int] = mapped_column(Integer)
    minor: Mapped[int] = mapped_column(Integer)
    patch: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="proposed")  # proposed|approved|rejected
    change: Mapped[str] = mapped_column(String(16))  # initial|patch|minor|major: what the check found
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # the compatibility report
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("event_contracts.id"), nullable=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    producer_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"), nullable=True)  # None: operator
    consumer_partner_ids: Mapped[list[int]] = mapped_column(JSON)
    purpose_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)  # the JSON Schema of the event's ``data``
    latency_ms: Mapped[int] = mapped_column(Integer)  # delivery-latency requirement (received -> delivered)
    retry: Mapped[dict[str, Any]] = mapped_column(JSON)  # backoff_seconds, multiplier, max_backoff_seconds, ...
    proposed_by: Mapped[str] = mapped_column(String(200))
    # Who approved, per side: {"steward": {"by", "at"}, "partner:<id>": {"by", "at"}}.
    approvals: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


class BusinessEvent(Base):
    """A published event, stored before it is acknowledged. ``data`` holds the fields that carry no
    customer data (those are kept only in the consented, pseudonymised per-consumer deliveries);
    ``body_digest`` is a keyed hash of the whole submitted body, for deduplication."""

    __tablename__ = "business_events"
    __table_args__ = (UniqueConstraint("producer", "event_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128))
    producer: Mapped[str] = mapped_column(String(64))  # "operator" or "partner:<id>": ids are per producer
    contract_id: Mapped[int] = mapped_column(ForeignKey("event_contracts.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # no FK: erasure deletes
    body_digest: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature: Mapped[str] = mapped_column(Text)  # the server's Ed25519 receipt over the stored record


class EventDelivery(Base):
    """One event for one consumer: written in the publishing transaction (the outbox), claimed with a lease,
    retried per the contract's policy, dead-lettered, replayable. Latency is received -> acknowledged."""

    __tablename__ = "business_event_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "partner_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("business_events.id"), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("event_contracts.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the envelope this consumer receives
    dropped_fields: Mapped[list[str]] = mapped_column(JSON, default=list)  # names only, never values
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending|delivered|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    within_requirement: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    replays: Mapped[int] = mapped_column(Integer, default=0)


class CollaborationRelease(Base):
    """What a partner's collaboration dashboard shows about customers under one of its data contracts with a
    decision service, over ``[period_start, period_end)``: customers decided and customers with a joint
    outcome, as one differentially private release charged to the (partner, purpose) budget. Stored, so it is
    shown again for free; the next release starts where this one ended."""

    __tablename__ = "collaboration_releases"
    __table_args__ = (UniqueConstraint("contract_id", "period_start"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    decided: Mapped[int | None] = mapped_column(Integer, nullable=True)  # noisy; None: below k, suppressed
    outcomes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    micro_epsilon: Mapped[int] = mapped_column(Integer)
    mechanism: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
