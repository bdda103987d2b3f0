"""What one consent change reads: the grant with its events and the catalog rows it refers to, each in one
statement, and the grant's latest receipt. Used by the write path (``changes``) and the receipts it signs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from consent import (
    EventKind,
    ReceiptEvent,
)
from dataspace.catalog.models import Dimension, Field, Purpose
from dataspace.db import deferred_rows, flush_deferred
from dataspace.errors import NotFound
from dataspace.grants.models import ConsentEvent, ConsentGrant
from dataspace.linkage import grants as linkage_grants
from dataspace.partners.models import Partner


class _PurposeRow(NamedTuple):
    key: str
    label: str
    dpv_term: str
    lawful_basis: str


class _FieldRow(NamedTuple):
    key: str
    label: str
    dimension_key: str
    sensitivity: str
    collection_purpose: str
    storage_location: str
    retention_days: int
    points_value: int
    status: str


class _PartnerRow(NamedTuple):
    id: int
    key: str
    name: str
    category: str
    status: str


# Only the columns a change uses (validation, receipt, consequences), read as plain tuples.
PURPOSE_COLUMNS = (Purpose.key, Purpose.label, Purpose.dpv_term, Purpose.lawful_basis)
FIELD_COLUMNS = (
    Field.key,
    Field.label,
    Field.dimension_key,
    Field.sensitivity,
    Field.collection_purpose,
    Field.storage_location,
    Field.retention_days,
    Field.points_value,
    Field.status,
)
PARTNER_COLUMNS = (Partner.id, Partner.key, Partner.name, Partner.category, Partner.status)
_P, _F, _R = len(PURPOSE_COLUMNS), len(FIELD_COLUMNS), len(PARTNER_COLUMNS)


def catalog_rows(values: Sequence[Any]) -> tuple[_PurposeRow | None, _FieldRow | None, _PartnerRow | None]:
    """Split the purpose, field and partner columns (in that order) of a result row; absent rows are None."""
    purpose, field, partner = values[:_P], values[_P : _P + _F], values[_P + _F : _P + _F + _R]
    return (
        _PurposeRow(*purpose) if purpose[0] is not None else None,
        _FieldRow(*field) if field[0] is not None else None,
        _PartnerRow(*partner) if partner[0] is not None else None,
    )


@dataclass(frozen=True)
class ChangeCatalog:
    """The catalog rows one change refers to: read once per change (in the statement that reads the subject
    or the grant), then used for validation, the receipt and the consequences alike."""

    purpose: _PurposeRow | None
    fields: list[_FieldRow]  # the grant's field, or its dimension's active non-sensitive fields (by key)
    dimension_label: str | None  # None: no dimension named, or no such dimension
    partner: _PartnerRow | None


def load_catalog(
    session: Session,
    purpose: _PurposeRow | None,
    field: _FieldRow | None,
    dimension_key: str | None,
    partner: _PartnerRow | None,
) -> ChangeCatalog:
    if dimension_key is None:
        return ChangeCatalog(purpose, [field] if field is not None else [], None, partner)
    if dimension_key == linkage_grants.DIMENSION:  # covers no catalog field (dataspace.linkage)
        return ChangeCatalog(purpose, [], linkage_grants.LABEL, partner)
    fields = session.execute(
        select(*FIELD_COLUMNS)
        .where(Field.dimension_key == dimension_key, Field.status == "active", Field.sensitivity != "sensitive")
        .order_by(Field.key)
    )
    label = session.scalar(select(Dimension.label).where(Dimension.key == dimension_key))
    return ChangeCatalog(purpose, [_FieldRow(*f) for f in fields], label, partner)


GRANTS: Table = ConsentGrant.__table__  # type: ignore[assignment]
EVENTS: Table = ConsentEvent.__table__  # type: ignore[assignment]
_GRANT_NAMES = tuple(c.key for c in GRANTS.c)
GRANT_WIDTH = len(_GRANT_NAMES)


def grant_of(session: Session, values: Sequence[Any]) -> ConsentGrant:
    """The session's object for a grant read as plain columns (``GRANTS.c``, in order): the one the
    session already holds (it knows this transaction's changes), else a new one put in the session as if
    the ORM had loaded it."""
    return as_loaded(session, dict(zip(_GRANT_NAMES, values, strict=True)))


def as_loaded(session: Session, data: dict[str, Any]) -> ConsentGrant:
    """The session's grant with these column values (all of them, as read back): the object the session
    already holds, else a new one put in the session as if the ORM had loaded it (no round trip)."""
    held = session.identity_map.get(identity_key(ConsentGrant, data["id"]))
    if held is not None:
        return held
    row = ConsentGrant(**data)
    make_transient_to_detached(row)
    session.add(row)
    return row


# The statements of a change are built once (building one costs about as much CPU as running it).
_LOAD_GRANT = (
    select(
        *GRANTS.c,
        *PURPOSE_COLUMNS,
        *FIELD_COLUMNS,
        *PARTNER_COLUMNS,
        ConsentEvent.kind,
        ConsentEvent.at,
        ConsentEvent.valid_from,
        ConsentEvent.valid_until,
    )
    .outerjoin(Purpose, Purpose.key == ConsentGrant.purpose_key)
    .outerjoin(Field, Field.key == ConsentGrant.field_key)
    .outerjoin(Partner, Partner.key == ConsentGrant.partner_key)
    .outerjoin(ConsentEvent, ConsentEvent.grant_id == ConsentGrant.id)
    .where(ConsentGrant.id == bindparam("grant_id"))
    .order_by(ConsentEvent.id)
)
_LOAD_OWNED_GRANT = _LOAD_GRANT.where(ConsentGrant.subject_id == bindparam("subject_id"))


def load_grant(
    session: Session, grant_id: int, *, subject_id: int | None = None
) -> tuple[ConsentGrant, ChangeCatalog, list[ReceiptEvent]]:
    """A grant (of ``subject_id`` when given) with its catalog rows and its events, oldest first, in one
    statement: one row per event, the catalog rows joined on their unique keys. Not found: ``NotFound``."""
    _flush_events_of(session, grant_id)
    conn = session.connection()  # Core: the ORM's per-statement bookkeeping cost as much as the query
    if subject_id is None:
        result = conn.execute(_LOAD_GRANT, {"grant_id": grant_id})
    else:
        result = conn.execute(_LOAD_OWNED_GRANT, {"grant_id": grant_id, "subject_id": subject_id})
    rows: list[Any] = list(result)
    if not rows:
        raise NotFound("no such grant")
    row = grant_of(session, rows[0][:GRANT_WIDTH])
    purpose, field, partner = catalog_rows(rows[0][GRANT_WIDTH:])
    e = GRANT_WIDTH + _P + _F + _R
    events = [ReceiptEvent(EventKind(r[e]), r[e + 1], r[e + 2], r[e + 3]) for r in rows if r[e] is not None]
    return row, load_catalog(session, purpose, field, row.dimension_key, partner), events


def _flush_events_of(session: Session, grant_id: int) -> None:
    """Write the events a batch holds back (see ``dataspace.groupcommit``) if this grant has one among them,
    before reading its events."""
    if any(row["grant_id"] == grant_id for row in deferred_rows(session, EVENTS)):
        flush_deferred(session)


def latest_receipt_id(session: Session, grant_id: int) -> str:
    _flush_events_of(session, grant_id)
    rid = session.scalar(
        select(ConsentEvent.receipt_id)
        .where(ConsentEvent.grant_id == grant_id)
        .order_by(ConsentEvent.id.desc())
        .limit(1)
    )
    assert rid is not None
    return rid
