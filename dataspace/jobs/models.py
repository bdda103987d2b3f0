"""Partner-job tables: data contracts and their approvals, uploaded models, jobs, decisions, privacy budgets
and differentially private releases.

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
    Index,
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


class Job(Base):
    """One run of a model over the eligible population; the state machine is persisted here."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|succeeded|failed|cancelled
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # ``error`` is the partner-visible reason, one code of ``dataspace.jobs.outcomes.REASONS`` (number-free);
    # ``error_detail`` is the full text (counts, exit status, the model's error line), for stewards only.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the job paid from the privacy budget at submission (the epsilon its release would spend; kept
    # when the job fails, so failures are not free; refunded if the partner cancels before the outcome shows).
    micro_epsilon_reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    # When the final state becomes visible to the partner (``dataspace.jobs.outcomes``: a schedule that does
    # not depend on how long the job ran), and when the partner asked to cancel (before it was visible).
    visible_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Pending while any shard's usage points are (set when a shard stores its decisions, cleared once its
    # decided subjects are credited; crediting is idempotent per (job, subject), so a crash in between is
    # finished by ``JobEngine.credit_pending``).
    points_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Broker mode: when a "plan this job" message was last confirmed by the broker (NULL: not yet sent).
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How many shards the plan made (0 = not planned yet: the job row holds the lease), and the plan's
    # population-wide parameters every shard must share (see ``dataspace.jobs.engine``).
    shard_count: Mapped[int] = mapped_column(Integer, default=0)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class JobShard(Base):
    """One slice of a sharded job's eligible subjects, run and stored on its own by any worker.

    ``subjects`` holds the shard's subject ids (ascending, delta-encoded int64, zlib). ``attempt`` counts
    claims: the storing transaction stores only for the attempt that holds the claim, and only once.
    """

    __tablename__ = "job_shards"
    __table_args__ = (Index("ix_job_shards_status", "status", "dispatched_at"),)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|succeeded|failed
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int] = mapped_column(Integer, default=0)
    subjects: Mapped[bytes] = mapped_column(LargeBinary)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set with the shard's decisions, cleared once its decided subjects' usage points are credited.
    points_pending: Mapped[bool] = mapped_column(Boolean, default=False)


class Decision(Base):
    """A job's decision for one subject, for the operator only (partners see DP aggregates)."""

    __tablename__ = "decisions"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    subject_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)


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


class Release(Base):
    """The one DP aggregate released for a job: asking again returns the same noisy numbers."""

    __tablename__ = "releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    micro_epsilon: Mapped[int] = mapped_column(BigInteger)
    mechanism: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
