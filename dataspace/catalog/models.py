"""Catalog tables: dimensions, purposes, fields and their append-only version history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.db import Base, UTCDateTime, utcnow


class Dimension(Base):
    """A group of fields shown together in the data manual (identity, behaviour, assets, ...)."""

    __tablename__ = "catalog_dimensions"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    i18n: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Purpose(Base):
    """A processing purpose; ``dpv_term`` names the W3C DPV purpose it corresponds to."""

    __tablename__ = "catalog_purposes"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    dpv_term: Mapped[str] = mapped_column(String(200))
    # The legal basis of processing for this purpose (a W3C DPV legal-basis term), shown on receipts and in
    # the records of processing.
    lawful_basis: Mapped[str] = mapped_column(String(64), default="dpv:Consent", server_default="dpv:Consent")
    parent_key: Mapped[str | None] = mapped_column(ForeignKey("catalog_purposes.key"), nullable=True)
    i18n: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Field(Base):
    """One kind of data held about customers, described in words a customer understands."""

    __tablename__ = "catalog_fields"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    dimension_key: Mapped[str] = mapped_column(ForeignKey("catalog_dimensions.key"))
    label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    collection_purpose: Mapped[str] = mapped_column(Text)
    used_for: Mapped[list[str]] = mapped_column(JSON, default=list)
    storage_location: Mapped[str] = mapped_column(String(200))
    sharing_scope: Mapped[str] = mapped_column(Text)
    retention_days: Mapped[int] = mapped_column(Integer)
    sensitivity: Mapped[str] = mapped_column(String(16))  # normal | sensitive (PIPL art. 28)
    points_value: Mapped[int] = mapped_column(Integer, default=0)
    data_type: Mapped[str] = mapped_column(String(16))  # integer | number | string | category | boolean | date
    constraints: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The catalog's promise: {transform: {limit: value}}, e.g. {"quantile": {"max_values": 4}}; a contract
    # finer than it is refused (``dataspace.emission.specs.check_against_catalog``).
    transforms: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)
    i18n: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | retired
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FieldVersion(Base):
    """An immutable snapshot of a field at each version; retired fields keep all of them."""

    __tablename__ = "catalog_field_versions"
    __table_args__ = (UniqueConstraint("field_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    field_id: Mapped[int] = mapped_column(ForeignKey("catalog_fields.id"))
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    change: Mapped[str] = mapped_column(String(16))  # created | updated | retired
    changed_by: Mapped[str] = mapped_column(String(200), default="system")
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
