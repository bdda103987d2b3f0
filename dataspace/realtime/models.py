"""Real-time decision table (see ``dataspace.realtime.service``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


class RealtimeDecision(Base):
    """One real-time decision request (``dataspace.realtime``) and its answer, for the operator only.

    ``outcome``: ``decided`` (the model ran on the subject's desensitized features: ``label``/``value`` set,
    one usage-ledger entry written with it) or ``not_permitted`` (no consent at that moment: nothing was read,
    the model did not run). ``event_id`` makes a request idempotent per contract."""

    __tablename__ = "realtime_decisions"
    __table_args__ = (
        UniqueConstraint("contract_id", "event_id", name="uq_realtime_decisions_event"),
        Index("ix_realtime_decisions_subject", "subject_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    subject_id: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))  # decided | not_permitted
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
