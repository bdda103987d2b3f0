"""Partner-job tables: jobs, their shards, their per-subject decisions and their differentially private
releases (the data contracts they run under are ``dataspace.agreements.models``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


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


class Release(Base):
    """The one DP aggregate released for a job: asking again returns the same noisy numbers."""

    __tablename__ = "releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    micro_epsilon: Mapped[int] = mapped_column(BigInteger)
    mechanism: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
