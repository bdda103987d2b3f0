"""Points ledger tables: double-entry accounts, transactions and postings, expiry lots, rewards, redemptions.

Postings are immutable: a mistake is fixed by a new correction transaction, never by editing a row (an
ORM guard refuses updates and deletes of postings and transactions). Every transaction's postings sum to
zero; each account caches its balance, and ``service.check_invariants`` recomputes it from the postings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow
from dataspace.errors import BrokenInvariant
from dataspace.subjects import models as _subjects  # noqa: F401  (the FK target must be mapped too)

ACCOUNT_KINDS = ("issuance", "customer", "redemption_sink", "expiry_sink")
TRANSACTION_KINDS = ("authorization_bonus", "usage", "redemption", "expiry", "correction")


class PointsAccount(Base):
    """One side of a posting. ``code`` names it uniquely (``issuance``, ``customer:42``, ...)."""

    __tablename__ = "points_accounts"
    __table_args__ = (
        CheckConstraint("kind <> 'customer' OR balance >= 0", name="customer_balance_nonnegative"),
        CheckConstraint("kind <> 'customer' OR subject_id IS NOT NULL", name="customer_has_subject"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id"), nullable=True, unique=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # Sum of everything ever earned (bonuses, usage, corrections); drives the tier, never decreases on spend.
    lifetime_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointsTransaction(Base):
    """A balanced set of postings; ``idempotency_key`` makes each business event post at most once."""

    __tablename__ = "points_transactions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    corrects_id: Mapped[int | None] = mapped_column(ForeignKey("points_transactions.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointsPosting(Base):
    """A signed amount on one account; the postings of a transaction sum to zero."""

    __tablename__ = "points_postings"
    __table_args__ = (Index("ix_points_postings_account_id_id", "account_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("points_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("points_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PointsLot(Base):
    """Points credited to a customer together, with their expiry; spent oldest expiry first."""

    __tablename__ = "points_lots"
    __table_args__ = (
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_within_amount"),
        Index("ix_points_lots_account_id_expires_at", "account_id", "expires_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("points_accounts.id"))
    transaction_id: Mapped[int] = mapped_column(ForeignKey("points_transactions.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Reward(Base):
    """Something customers can redeem points for; ``stock`` never goes below zero."""

    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_nonnegative"),
        CheckConstraint("cost > 0", name="cost_positive"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    cost: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    i18n: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Redemption(Base):
    """A customer's redemption, keyed by the client's Idempotency-Key; ``response`` is replayed verbatim."""

    __tablename__ = "redemptions"
    __table_args__ = (UniqueConstraint("subject_id", "idempotency_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    cost: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="completed")
    transaction_id: Mapped[int] = mapped_column(ForeignKey("points_transactions.id"))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImmutablePostingError(BrokenInvariant):
    """Raised when code tries to edit or delete a posted row; post a correction instead."""


def _refuse_edit(_mapper: Any, _connection: Any, _target: Any) -> None:
    raise ImmutablePostingError("postings are immutable; post a correction transaction instead")


for _immutable in (PointsPosting, PointsTransaction):
    event.listen(_immutable, "before_update", _refuse_edit)
    event.listen(_immutable, "before_delete", _refuse_edit)
