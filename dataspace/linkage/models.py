"""Linkage tables: a partner's contribution (one run of the PSI protocol and its sealed columns) and the links
it made to subjects who granted linkage.

Crypto-shredding: a contribution's rows are readable only through ``wrapped_private_key`` (the X25519 key the
partner's data key is sealed to, wrapped by a server key). Shredding sets it, the sealed data key and the
operator's scalar to NULL and deletes the links; a row copied out before that stays unreadable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


class Declaration(Base):
    """The partner columns a contract brings, declared while the contract is proposed, so the stewards who
    approve the contract approve them with it (and customers read them in the data manual)."""

    __tablename__ = "linkage_declarations"
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # the identifier matched on
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    declared_by: Mapped[str] = mapped_column(String(200))
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Contribution(Base):
    __tablename__ = "linkage_contributions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # email | phone | national_id
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # the declared partner columns
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | linked | shredded | aborted
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_private_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sealed_data_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # The operator's scalar ``a`` (wrapped) and message 1 with its order (subject id per point, -1 for
    # padding; int64, zlib) exist only while the run is open.
    wrapped_scalar: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    message: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    order: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sent: Mapped[int] = mapped_column(Integer, default=0)  # points in message 1, padding included
    matched: Mapped[int] = mapped_column(Integer, default=0)  # exact: operator only
    noisy_matched: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the DP count the partner sees
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Link(Base):
    """A subject matched by a contribution, with the partner's sealed row for that subject."""

    __tablename__ = "linkage_links"
    contribution_id: Mapped[int] = mapped_column(ForeignKey("linkage_contributions.id"), primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), primary_key=True, index=True)
    blinded_id: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_row: Mapped[bytes] = mapped_column(LargeBinary)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
