"""Subjects, their wrapped data keys, and their sealed profiles.

No plaintext customer value is stored: the external reference is kept only as a keyed blind index, and the
profile is one AES-GCM blob per subject under that subject's data key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


class Subject(Base):
    __tablename__ = "subjects"
    __table_args__ = (
        # Erased subjects only (few): a job's consent re-check asks who was erased since its plan.
        Index(
            "ix_subjects_erased",
            "erased_at",
            sqlite_where=text("erased_at IS NOT NULL"),
            postgresql_where=text("erased_at IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blind_ref: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SubjectKey(Base):
    """The subject's data key wrapped by the epoch key ``(bucket, epoch)`` held in the key store (see
    ``dataspace.vault``). Deleting this row shreds the subject in the live database; retiring its bucket's
    epoch key shreds it in every earlier backup."""

    __tablename__ = "subject_keys"
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)


class KeyEpoch(Base):
    """A bucket's current epoch-key generation, and whether an erasure asked for its retirement.

    The row is the bucket's lock: ingest reads it FOR SHARE before wrapping under its generation, a
    retirement and an erasure lock it FOR UPDATE (erasure first, then its ``subject_keys`` row: one order).
    """

    __tablename__ = "key_epochs"
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(Integer)
    retire_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class SubjectProfile(Base):
    __tablename__ = "subject_profiles"
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
