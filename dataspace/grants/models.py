"""Consent tables.

- ``consent_grants``: the current state of every grant (materialized). ``active_scope_key`` is set only while
  a grant is active and is unique, so at most one active grant exists per (subject, scope) on SQLite and
  PostgreSQL alike (NULLs never collide).
- ``consent_events``: the append-only history; the ORM refuses to update or delete its rows.
- ``consent_receipts``: one signed receipt per change (canonical JSON text, signing key id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, event, text
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


class ConsentGrant(Base):
    __tablename__ = "consent_grants"
    __table_args__ = (
        Index("ix_consent_grants_eval", "purpose_key", "state"),
        Index("ix_consent_grants_subject", "subject_id", "state"),
        # A job's consent re-check before storing reads only the grants changed or lapsed since its plan
        # (dataspace.grants.eligibility.still_eligible): these keep it from scanning the purpose's grants.
        Index("ix_consent_grants_changed", "purpose_key", "updated_at"),
        Index(
            "ix_consent_grants_lapsing",
            "purpose_key",
            "valid_until",
            sqlite_where=text("valid_until IS NOT NULL"),
            postgresql_where=text("valid_until IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    scope_key: Mapped[str] = mapped_column(String(255))
    active_scope_key: Mapped[str | None] = mapped_column(String(300), unique=True, nullable=True)
    field_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dimension_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    purpose_key: Mapped[str] = mapped_column(String(64))
    partner_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    partner_category: Mapped[str | None] = mapped_column(String(64), nullable=True)
    granularity: Mapped[str] = mapped_column(String(32))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # active | withdrawn | expired
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsentEvent(Base):
    __tablename__ = "consent_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("consent_grants.id"), index=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # granted | renewed | withdrawn | expired
    state: Mapped[str] = mapped_column(String(40))  # DPV status term
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    granularity: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    receipt_id: Mapped[str] = mapped_column(String(36), unique=True)


class ConsentReceipt(Base):
    __tablename__ = "consent_receipts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("consent_grants.id"), index=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    kid: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the signed receipt, canonical JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@event.listens_for(ConsentEvent, "before_update")
@event.listens_for(ConsentEvent, "before_delete")
@event.listens_for(ConsentReceipt, "before_update")
@event.listens_for(ConsentReceipt, "before_delete")
def _append_only(_mapper: Any, _connection: Any, target: Any) -> None:
    raise RuntimeError(f"{type(target).__name__} rows are append-only")
