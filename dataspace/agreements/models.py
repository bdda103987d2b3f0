"""Data contract tables: contracts and their approvals, the models uploaded under them, and privacy budgets.

Privacy budgets are kept in integer micro-epsilon so the "never overspent" rule is an exact integer CHECK on
both databases (no floating-point slack).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


class Contract(Base):
    """What a partner may compute: purpose, features (catalog field + transform), decision schema, output
    policy (minimum group size ``k_min``, epsilon per aggregate release) and a validity window."""

    __tablename__ = "contracts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    purpose_key: Mapped[str] = mapped_column(ForeignKey("catalog_purposes.key"))
    title: Mapped[str] = mapped_column(String(200), default="")
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    decision_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    k_min: Mapped[int] = mapped_column(Integer)
    epsilon_per_release: Mapped[float] = mapped_column(Float)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)  # any feature field is sensitive
    required_approvals: Mapped[int] = mapped_column(Integer, default=1)  # 2 when sensitive (two-person rule)
    status: Mapped[str] = mapped_column(String(16), default="proposed")  # proposed|approved|rejected|revoked
    proposed_by: Mapped[str] = mapped_column(String(200))
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A real-time decision service, if the contract declares one (``dataspace.realtime``): {"events": [event
    # types that may trigger a decision]}; NULL: batch jobs only. Approved with the rest of the contract.
    decision_service: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)


class ContractApproval(Base):
    """One steward's approval of a contract; a steward approves a contract at most once."""

    __tablename__ = "contract_approvals"
    __table_args__ = (UniqueConstraint("contract_id", "steward", name="uq_contract_approvals_steward"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    steward: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PartnerModel(Base):
    """An uploaded model. ONNX is ``ready`` once its signature matched the contract; Python scoring code is
    ``uploaded`` until stewards approve it (two of them for a sensitive contract)."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # onnx | python
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))  # ready | uploaded | approved | rejected
    signature: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    approvals: Mapped[list[str]] = mapped_column(JSON, default=list)  # steward names (python only)
    uploaded_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PrivacyBudget(Base):
    """Epsilon a partner may spend on aggregate releases for one purpose (micro-epsilon, exact integers)."""

    __tablename__ = "privacy_budgets"
    __table_args__ = (
        UniqueConstraint("partner_id", "purpose_key", name="uq_privacy_budgets_partner_purpose"),
        CheckConstraint("micro_epsilon_spent >= 0", name="spent_nonnegative"),
        CheckConstraint("micro_epsilon_spent <= micro_epsilon_total", name="spent_within_total"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    purpose_key: Mapped[str] = mapped_column(ForeignKey("catalog_purposes.key"))
    micro_epsilon_total: Mapped[int] = mapped_column(BigInteger)
    micro_epsilon_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
