"""Tables of the tamper-evident log: entries (queued, then sequenced), subtree nodes, heads, checkpoints.

Several logs ("audit", "usage") share these tables; the ``log`` column separates them and each is its own
Merkle tree. An entry is written *queued* (``idx`` NULL) inside the caller's transaction, then the
sequencer assigns consecutive indexes in one transaction per batch and stores the complete-subtree hashes
(levels >= ``STORED_MIN_LEVEL``) so proofs need O(log n) lookups.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


class TLogEntry(Base):
    __tablename__ = "tlog_entries"
    __table_args__ = (
        UniqueConstraint("log", "idx", name="uq_tlog_entries_log_idx"),
        Index("ix_tlog_entries_log_subject", "log", "subject_id"),
        Index("ix_tlog_entries_log_created", "log", "created_at"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    log: Mapped[str] = mapped_column(String(16))
    # NULL while queued; the sequencer sets it (0-based position in the log's tree).
    idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Canonical JSON of the entry (sorted keys, no whitespace); the leaf is SHA-256(0x00 || utf-8 bytes).
    entry: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Search keys copied out of the entry (ids and names only, never values).
    action: Mapped[str] = mapped_column(String(64), default="")
    actor: Mapped[str] = mapped_column(String(200), default="")
    subject_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    partner: Mapped[str | None] = mapped_column(String(64), nullable=True)


class TLogNode(Base):
    """The hash of the complete subtree covering leaves [index * 2**level, (index + 1) * 2**level)."""

    __tablename__ = "tlog_nodes"
    log: Mapped[str] = mapped_column(String(16), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class TLogHead(Base):
    """One row per log: its sequenced size and root; the sequencer locks it (FOR UPDATE) per batch."""

    __tablename__ = "tlog_heads"
    log: Mapped[str] = mapped_column(String(16), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TLogCheckpoint(Base):
    __tablename__ = "tlog_checkpoints"
    __table_args__ = (UniqueConstraint("log", "size", name="uq_tlog_checkpoints_log_size"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    log: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)  # the C2SP signed note
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
