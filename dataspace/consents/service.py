"""Consent service: grant, withdraw, renew and expire grants; history, receipts, the customer's matrix,
steward statistics, and the loader that feeds the bulk evaluator.

Every change appends a ``consent_events`` row, updates the materialized ``consent_grants`` row and stores a
signed receipt, in the caller's transaction (services never commit). Timestamps come from ``clock`` (the
server's UTC clock unless a test injects one). Another customer's grant or receipt is "not found".
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import BigInteger, Table, Update, bindparam, case, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

import consent
from consent import (
    DPV_STATUS,
    EventKind,
    FieldRef,
    GrantState,
    GrantTable,
    Granularity,
    PartnerRef,
    ReceiptEvent,
    ReceiptParty,
    Scope,
    Signer,
)
from consent.bulk import to_micros
from dataspace.audit import batched as audit_batch
from dataspace.audit import record_event
from dataspace.auth.principal import SYSTEM, Principal
from dataspace.catalog.models import Dimension, Field, Purpose
from dataspace.consents.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.db import deferred_rows, flush_deferred, insert_later, utcnow
from dataspace.errors import ConcurrentChange, Conflict, InvalidInput, NotFound
from dataspace.events import service as events
from dataspace.linkage import grants as linkage_grants
from dataspace.partners.models import Partner
from dataspace.points import service as points
from dataspace.subjects.models import Subject

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class ReceiptPolicy:
    """What receipts say about the controller (the operator) and where to withdraw."""

    controller: ReceiptParty = field(
        default_factory=lambda: ReceiptParty(
            name="Dataspace operator", contact="privacy@operator.example", url="https://operator.example/privacy"
        )
    )
    jurisdiction: str = "CN"
    language: str = "en"


DEFAULT_POLICY = ReceiptPolicy()
# How often one change re-reads and tries again when a concurrent change of the same grant won the race.
CONCURRENT_ATTEMPTS = 5


@dataclass(frozen=True)
class GrantRequest:
    purpose: str
    field: str | None = None
    dimension: str | None = None
    partner: str | None = None
    partner_category: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    granularity: str = Granularity.GENERALIZED.value


@dataclass(frozen=True)
class Change:
    """The outcome of a toggle. ``changed`` is False when the call was a no-op (idempotent repeat); then
    ``receipt_id`` names the receipt of the change that is already in force."""

    grant: ConsentGrant
    receipt_id: str
    changed: bool


# --- conversions ---------------------------------------------------------------------------------------
def scope_of(row: ConsentGrant) -> Scope:
    return Scope(
        row.purpose_key,
        field=row.field_key,
        dimension=row.dimension_key,
        partner=row.partner_key,
        partner_category=row.partner_category,
    )


def to_domain(row: ConsentGrant) -> consent.Grant:
    return consent.Grant(
        id=row.id,
        subject_id=row.subject_id,
        scope=scope_of(row),
        granularity=Granularity(row.granularity),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        state=GrantState(row.state),
        withdrawn_at=row.withdrawn_at,
    )


def current_state(row: ConsentGrant, now: datetime) -> str:
    """The state as of ``now`` (an active grant past its window reads as expired before the sweep runs)."""
    if row.state == GrantState.ACTIVE and row.valid_until is not None and row.valid_until <= now:
        return GrantState.EXPIRED.value
    return row.state


def grant_view(row: ConsentGrant, now: datetime) -> dict[str, Any]:
    """The grant as a person is shown it (``GrantRead``'s fields), its state as of ``now``."""
    return {
        "id": row.id,
        "field_key": row.field_key,
        "dimension_key": row.dimension_key,
        "purpose_key": row.purpose_key,
        "partner_key": row.partner_key,
        "partner_category": row.partner_category,
        "granularity": row.granularity,
        "valid_from": row.valid_from,
        "valid_until": row.valid_until,
        "state": current_state(row, now),
        "withdrawn_at": row.withdrawn_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _active_key(subject_id: int, scope: Scope) -> str:
    return f"{subject_id}|{scope.key}"


# --- the catalog rows of a change -------------------------------------------------------------------------
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
_PURPOSE_COLUMNS = (Purpose.key, Purpose.label, Purpose.dpv_term, Purpose.lawful_basis)
_FIELD_COLUMNS = (
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
_PARTNER_COLUMNS = (Partner.id, Partner.key, Partner.name, Partner.category, Partner.status)
_P, _F, _R = len(_PURPOSE_COLUMNS), len(_FIELD_COLUMNS), len(_PARTNER_COLUMNS)


def _catalog_rows(values: Sequence[Any]) -> tuple[_PurposeRow | None, _FieldRow | None, _PartnerRow | None]:
    """Split the purpose, field and partner columns (in that order) of a result row; absent rows are None."""
    purpose, field, partner = values[:_P], values[_P : _P + _F], values[_P + _F : _P + _F + _R]
    return (
        _PurposeRow(*purpose) if purpose[0] is not None else None,
        _FieldRow(*field) if field[0] is not None else None,
        _PartnerRow(*partner) if partner[0] is not None else None,
    )


@dataclass(frozen=True)
class _Catalog:
    """The catalog rows one change refers to: read once per change (in the statement that reads the subject
    or the grant), then used for validation, the receipt and the consequences alike."""

    purpose: _PurposeRow | None
    fields: list[_FieldRow]  # the grant's field, or its dimension's active non-sensitive fields (by key)
    dimension_label: str | None  # None: no dimension named, or no such dimension
    partner: _PartnerRow | None


def _catalog(
    session: Session,
    purpose: _PurposeRow | None,
    field: _FieldRow | None,
    dimension_key: str | None,
    partner: _PartnerRow | None,
) -> _Catalog:
    if dimension_key is None:
        return _Catalog(purpose, [field] if field is not None else [], None, partner)
    if dimension_key == linkage_grants.DIMENSION:  # covers no catalog field (dataspace.linkage)
        return _Catalog(purpose, [], linkage_grants.LABEL, partner)
    fields = session.execute(
        select(*_FIELD_COLUMNS)
        .where(Field.dimension_key == dimension_key, Field.status == "active", Field.sensitivity != "sensitive")
        .order_by(Field.key)
    )
    label = session.scalar(select(Dimension.label).where(Dimension.key == dimension_key))
    return _Catalog(purpose, [_FieldRow(*f) for f in fields], label, partner)


_GRANTS: Table = ConsentGrant.__table__  # type: ignore[assignment]
_GRANT_NAMES = tuple(c.key for c in _GRANTS.c)
_G = len(_GRANT_NAMES)


def _grant_of(session: Session, values: Sequence[Any]) -> ConsentGrant:
    """The session's object for a grant read as plain columns (``_GRANTS.c``, in order): the one the
    session already holds (it knows this transaction's changes), else a new one put in the session as if
    the ORM had loaded it."""
    return _as_loaded(session, dict(zip(_GRANT_NAMES, values, strict=True)))


def _as_loaded(session: Session, data: dict[str, Any]) -> ConsentGrant:
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
        *_GRANTS.c,
        *_PURPOSE_COLUMNS,
        *_FIELD_COLUMNS,
        *_PARTNER_COLUMNS,
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


def _load_grant(
    session: Session, grant_id: int, *, subject_id: int | None = None
) -> tuple[ConsentGrant, _Catalog, list[ReceiptEvent]]:
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
    row = _grant_of(session, rows[0][:_G])
    purpose, field, partner = _catalog_rows(rows[0][_G:])
    e = _G + _P + _F + _R
    events = [ReceiptEvent(EventKind(r[e]), r[e + 1], r[e + 2], r[e + 3]) for r in rows if r[e] is not None]
    return row, _catalog(session, purpose, field, row.dimension_key, partner), events


# --- validation against the catalog -----------------------------------------------------------------------
def _scope_of_request(req: GrantRequest) -> Scope:
    try:
        return Scope(
            req.purpose,
            field=req.field,
            dimension=req.dimension,
            partner=req.partner,
            partner_category=req.partner_category,
        )
    except consent.InvalidGrant as exc:
        raise InvalidInput(str(exc)) from None


# Every lookup is a LEFT JOIN on a unique key, so the statement returns one row if the subject exists and
# none otherwise; a parameter the request leaves out is NULL, which matches nothing.
_CHECK_REQUEST = (
    select(
        Subject.erased_at,
        *_PURPOSE_COLUMNS,
        *_FIELD_COLUMNS,
        *_PARTNER_COLUMNS,
        exists().where(aliased(Partner).category == bindparam("category")),
        *_GRANTS.c,
    )
    .select_from(Subject)
    .outerjoin(Purpose, Purpose.key == bindparam("purpose"))
    .outerjoin(Field, Field.key == bindparam("field"))
    .outerjoin(Partner, Partner.key == bindparam("partner"))
    .outerjoin(ConsentGrant, ConsentGrant.active_scope_key == bindparam("active_key"))
    .where(Subject.id == bindparam("subject_id"))
)


def _check_request(
    session: Session, subject_id: int, req: GrantRequest, active_key: str
) -> tuple[_Catalog, ConsentGrant | None]:
    """Validate the request against the subject and the catalog; returns the catalog rows and the grant now
    active for the scope, if any. One statement, unless the request names a dimension."""
    params = {
        "subject_id": subject_id,
        "purpose": req.purpose,
        "active_key": active_key,
        "field": req.field,
        "partner": req.partner,
        "category": req.partner_category,
    }
    found: Any = session.connection().execute(_CHECK_REQUEST, params).one_or_none()
    if found is None or found[0] is not None:
        raise NotFound("no such data subject")
    purpose, field, partner = _catalog_rows(found[1:])
    category_known = found[-_G - 1]
    existing = _grant_of(session, found[-_G:]) if found[-_G] is not None else None
    if purpose is None:
        raise InvalidInput(f"unknown purpose {req.purpose!r}")
    if req.field is not None and (field is None or field.status != "active"):
        raise InvalidInput(f"unknown field {req.field!r}")
    catalog = _catalog(session, purpose, field, req.dimension, partner)
    if req.dimension is not None and catalog.dimension_label is None:
        raise InvalidInput(f"unknown dimension {req.dimension!r}")
    if req.partner is not None and (partner is None or partner.status != "active"):
        raise InvalidInput(f"unknown partner {req.partner!r}")
    if req.partner_category is not None and not category_known:
        raise InvalidInput(f"unknown partner category {req.partner_category!r}")
    if req.dimension == linkage_grants.DIMENSION and req.partner is None:
        raise InvalidInput("a linkage grant names one partner")
    return catalog, existing


# --- receipts -------------------------------------------------------------------------------------------
# What is done with data under a grant (W3C DPV processing terms), in the order of a partner job's data flow.
_PROCESSING = (
    ("dpv:Store", "kept encrypted with a key of your own in the operator's data space"),
    ("dpv:Pseudonymise", "shown to the partner only under a pseudonym made for that partner alone"),
    ("dpv:Analyse", "the partner's model runs on it inside an isolated sandbox; the data never leaves"),
    ("dpv:Derive", "the model's decision about you is stored for the operator"),
    ("dpv:Aggregate", "the partner sees only noised statistics over many customers, never your data"),
)
_GENERALISE = ("dpv:Transform", "generalised before use (bands, tiers, top-coding), never the exact value")


def processing_operations(granularity: str) -> list[dict[str, str]]:
    """The processing a grant of this granularity allows, as receipts list it."""
    ops = list(_PROCESSING)
    if granularity == Granularity.GENERALIZED.value:
        ops.insert(2, _GENERALISE)
    return [{"operation": op, "description": text} for op, text in ops]


def _receipt(
    row: ConsentGrant, events: Sequence[ReceiptEvent], receipt_id: str, policy: ReceiptPolicy, catalog: _Catalog
) -> dict[str, Any]:
    purpose, fields, partner = catalog.purpose, catalog.fields, catalog.partner
    if row.field_key is not None:
        f = fields[0]
        pii = [
            {
                "field": f.key,
                "label": f.label,
                "dimension": f.dimension_key,
                "sensitive": f.sensitivity == "sensitive",
                "data_source": {"collected_by": policy.controller.name, "collection": f.collection_purpose},
            }
        ]
    else:
        pii = [
            {
                "dimension": row.dimension_key,
                "label": catalog.dimension_label if catalog.dimension_label is not None else row.dimension_key,
                "sensitive": False,
                "fields": [f.key for f in fields],
                "data_source": {
                    "collected_by": policy.controller.name,
                    "collection": {f.key: f.collection_purpose for f in fields},
                },
            }
        ]
    if row.partner_key is not None:
        recipients = [
            {
                "partner": row.partner_key,
                "name": partner.name if partner else row.partner_key,
                "category": partner.category if partner else None,
            }
        ]
    else:
        recipients = [
            {"partner_category": row.partner_category, "name": f"any partner of category {row.partner_category}"}
        ]
    return consent.build_receipt(
        receipt_id=receipt_id,
        grant=to_domain(row),
        pii_principal_id=f"subject:{row.subject_id}",
        issued_at=events[-1].at,
        events=events,
        purposes=[
            {
                "purpose": row.purpose_key,
                "label": purpose.label if purpose else row.purpose_key,
                "dpv": purpose.dpv_term if purpose else "",
                "lawful_basis": purpose.lawful_basis if purpose else "dpv:Consent",
            }
        ],
        pii_information=pii,
        controller=policy.controller,
        storage_locations=[f.storage_location for f in fields],
        retention_days=max((f.retention_days for f in fields), default=0),
        jurisdiction=policy.jurisdiction,
        recipient_third_parties=recipients,
        withdrawal_method=f"Switch it off in your data account, or DELETE /v1/me/consents/{row.id}",
        language=policy.language,
        processing_operations=processing_operations(row.granularity),
        notice={"url": policy.controller.url, "language": policy.language},
    )


def _record_change(
    session: Session,
    row: ConsentGrant,
    kind: EventKind,
    at: datetime,
    *,
    signer: Signer,
    actor: Principal | None,
    policy: ReceiptPolicy,
    catalog: _Catalog | None = None,
    prior: Sequence[ReceiptEvent] | None = None,
) -> str:
    """Append the event, sign and store its receipt, write the audit entry and the consequences; returns the
    receipt id. ``catalog`` and ``prior`` (the grant's events before this one) are read here unless given."""
    if catalog is None or prior is None:
        _, loaded_catalog, loaded_prior = _load_grant(session, row.id)
        catalog = loaded_catalog if catalog is None else catalog
        prior = loaded_prior if prior is None else prior
    at = at.astimezone(UTC)  # as stored and read back: receipts show UTC times
    receipt_id = str(uuid.uuid4())
    insert_later(
        session,
        _EVENTS,
        {
            "grant_id": row.id,
            "subject_id": row.subject_id,
            "kind": kind.value,
            "state": DPV_STATUS[kind],
            "at": at,
            "valid_from": row.valid_from,
            "valid_until": row.valid_until,
            "granularity": row.granularity,
            "actor": (actor or SYSTEM).actor,
            "receipt_id": receipt_id,
        },
    )
    history = [*prior, ReceiptEvent(kind, at, row.valid_from, row.valid_until)]
    signed = consent.sign_receipt(_receipt(row, history, receipt_id, policy, catalog), signer)
    insert_later(
        session,
        _RECEIPTS,
        {
            "id": receipt_id,
            "grant_id": row.id,
            "subject_id": row.subject_id,
            "kid": signer.kid,
            "body": consent.canonical_json(signed).decode(),
            "created_at": at,
        },
    )
    with audit_batch(session):  # this entry and the bonus's: one append
        record_event(
            session,
            actor=actor or SYSTEM,
            action=f"consent.{kind.value}",
            target=f"grant:{row.id}",
            details={
                "subject_id": row.subject_id,
                "receipt_id": receipt_id,
                "purpose": row.purpose_key,
                "field": row.field_key,
                "dimension": row.dimension_key,
                "partner": row.partner_key,
                "partner_category": row.partner_category,
            },
        )
        _consequences(session, row, kind, at, actor, catalog=catalog)
    session.flush()
    return receipt_id


def _consequences(
    session: Session, row: ConsentGrant, kind: EventKind, at: datetime, actor: Principal | None, *, catalog: _Catalog
) -> None:
    """What a consent change sets off, in the same transaction: the one-time authorization bonus for each
    field a new grant covers, and the event for the partner the grant names."""
    if kind == EventKind.GRANTED:
        # A dimension grant covers its normal fields (never sensitive ones).
        covered = [f for f in catalog.fields if row.field_key is not None or f.sensitivity == "normal"]
        for f in covered:
            points.queue_authorization_bonus(
                session,
                subject_id=row.subject_id,
                field_key=f.key,
                now=at,
                actor=actor,
                points=f.points_value,
                label=f.label,
            )
    if catalog.partner is not None and kind != EventKind.RENEWED:
        events.emit(
            session,
            f"consent.{kind.value}",
            {
                "field": row.field_key,
                "dimension": row.dimension_key,
                "purpose": row.purpose_key,
                "partner": row.partner_key,
                "partner_category": row.partner_category,
                "valid_until": row.valid_until.isoformat() if row.valid_until else None,
            },
            partner_id=catalog.partner.id,
            now=at,
        )


def _flush_events_of(session: Session, grant_id: int) -> None:
    """Write the events a batch holds back (see ``dataspace.groupcommit``) if this grant has one among them,
    before reading its events."""
    if any(row["grant_id"] == grant_id for row in deferred_rows(session, _EVENTS)):
        flush_deferred(session)


def _latest_receipt_id(session: Session, grant_id: int) -> str:
    _flush_events_of(session, grant_id)
    rid = session.scalar(
        select(ConsentEvent.receipt_id)
        .where(ConsentEvent.grant_id == grant_id)
        .order_by(ConsentEvent.id.desc())
        .limit(1)
    )
    assert rid is not None
    return rid


# --- changes --------------------------------------------------------------------------------------------
_EVENTS: Table = ConsentEvent.__table__  # type: ignore[assignment]
_RECEIPTS: Table = ConsentReceipt.__table__  # type: ignore[assignment]
_INSERT_ACTIVE = {
    name: dialect_insert(_GRANTS)
    .on_conflict_do_nothing(index_elements=[_GRANTS.c.active_scope_key])
    .returning(_GRANTS.c.id)
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def _as_read(value: Any) -> Any:
    """A value as the database reads it back (datetimes in UTC): what a row put in the session by hand holds."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _insert_active(session: Session, values: dict[str, Any]) -> ConsentGrant | None:
    """Insert a grant unless another grant is active for its scope (then None). ON CONFLICT DO NOTHING on the
    unique active key: a concurrent grant of the same scope makes this wait for the other transaction and
    then yield to it, in one statement (no savepoint)."""
    conn = session.connection()  # Core statements skip the ORM's per-statement bookkeeping
    grant_id = conn.execute(_INSERT_ACTIVE[conn.dialect.name], values).scalar()
    if grant_id is None:
        return None
    # The row as stored (times in UTC, as they read back): every column is known, so no second round trip.
    stored = {k: _as_read(v) for k, v in values.items()}
    return _as_loaded(session, {"id": grant_id, "withdrawn_at": None, **stored})


def grant(
    session: Session,
    *,
    subject_id: int,
    request: GrantRequest,
    signer: Signer,
    actor: Principal | None = None,
    clock: Clock = utcnow,
    policy: ReceiptPolicy = DEFAULT_POLICY,
) -> Change:
    """Grant consent for one scope. Repeating the same grant is a no-op returning the grant in force."""
    now = clock()
    scope = _scope_of_request(request)
    key = _active_key(subject_id, scope)
    catalog, existing = _check_request(session, subject_id, request, key)
    try:
        terms = consent.new_grant(
            id=0,
            subject_id=subject_id,
            scope=scope,
            now=now,
            valid_from=request.valid_from,
            valid_until=request.valid_until,
            granularity=request.granularity,
        )
    except consent.InvalidGrant as exc:
        raise InvalidInput(str(exc)) from None

    if existing is not None and existing.valid_until is not None and existing.valid_until <= now:
        _expire_row(session, existing, now, signer=signer, policy=policy, catalog=catalog)
        existing = None
    # Insert, or answer with the grant a concurrent request made active. Between the two statements that
    # grant may be withdrawn (each statement sees what committed before it): then the insert is tried again,
    # a bounded number of times, so a customer toggling fast never gets a conflict to retry by hand.
    for _ in range(CONCURRENT_ATTEMPTS):
        if existing is not None:
            break
        row = _insert_active(
            session,
            {
                "subject_id": subject_id,
                "scope_key": scope.key,
                "active_scope_key": key,
                "field_key": scope.field,
                "dimension_key": scope.dimension,
                "purpose_key": scope.purpose,
                "partner_key": scope.partner,
                "partner_category": scope.partner_category,
                "granularity": terms.granularity.value,
                "valid_from": terms.valid_from,
                "valid_until": terms.valid_until,
                "state": GrantState.ACTIVE.value,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            },
        )
        if row is not None:
            new = EventKind.GRANTED
            rid = _record_change(
                session, row, new, now, signer=signer, actor=actor, policy=policy, catalog=catalog, prior=[]
            )
            return Change(row, rid, changed=True)
        # A concurrent grant of the same scope won: answer with it.
        existing = session.scalar(select(ConsentGrant).where(ConsentGrant.active_scope_key == key))
    if existing is None:
        raise ConcurrentChange("the grant changed concurrently")
    if existing.granularity != terms.granularity.value or existing.valid_until != terms.valid_until:
        raise Conflict(
            f"grant {existing.id} is already active for this scope with other terms; renew or withdraw it",
            extra={"grant_id": existing.id},
        )
    return Change(existing, _latest_receipt_id(session, existing.id), changed=False)


@functools.cache
def _transition_statement(columns: tuple[str, ...]) -> Update:
    return (
        update(_GRANTS)
        .where(
            _GRANTS.c.id == bindparam("b_id"),
            _GRANTS.c.state == GrantState.ACTIVE.value,
            _GRANTS.c.version == bindparam("b_version"),
        )
        .values({c: bindparam(f"v_{c}", type_=_GRANTS.c[c].type) for c in columns})
    )


def _transition(session: Session, row: ConsentGrant, values: dict[str, Any]) -> bool:
    """Compare-and-set on (state active, version): the one writer that wins makes the change. The winner
    knows the row's new values (nobody else changed it: the version matched), a loser reads them."""
    new = {"version": row.version + 1, **values}
    result = session.connection().execute(
        _transition_statement(tuple(sorted(new))),
        {"b_id": row.id, "b_version": row.version, **{f"v_{k}": v for k, v in new.items()}},
    )
    if getattr(result, "rowcount", 0) != 1:
        session.refresh(row)
        return False
    for name, value in new.items():
        set_committed_value(row, name, _as_read(value))
    return True


def _expire_row(
    session: Session,
    row: ConsentGrant,
    now: datetime,
    *,
    signer: Signer,
    policy: ReceiptPolicy,
    catalog: _Catalog | None = None,
    prior: Sequence[ReceiptEvent] | None = None,
) -> str | None:
    if _transition(session, row, {"state": GrantState.EXPIRED.value, "active_scope_key": None, "updated_at": now}):
        return _record_change(
            session, row, EventKind.EXPIRED, now, signer=signer, actor=None, policy=policy, catalog=catalog, prior=prior
        )
    return None


def withdraw(
    session: Session,
    *,
    subject_id: int,
    grant_id: int,
    signer: Signer,
    actor: Principal | None = None,
    clock: Clock = utcnow,
    policy: ReceiptPolicy = DEFAULT_POLICY,
) -> Change:
    """Withdraw a grant, effective immediately. Withdrawing an ended grant is a no-op."""
    now = clock()
    row, catalog, prior = _load_grant(session, grant_id, subject_id=subject_id)
    if row.state == GrantState.ACTIVE.value and row.valid_until is not None and row.valid_until <= now:
        rid = _expire_row(session, row, now, signer=signer, policy=policy, catalog=catalog, prior=prior)
        return Change(row, rid or _latest_receipt_id(session, row.id), changed=rid is not None)
    if row.state != GrantState.ACTIVE.value:
        return Change(row, _latest_receipt_id(session, row.id), changed=False)
    if not _transition(
        session,
        row,
        {"state": GrantState.WITHDRAWN.value, "withdrawn_at": now, "active_scope_key": None, "updated_at": now},
    ):
        return Change(row, _latest_receipt_id(session, row.id), changed=False)
    rid = _record_change(
        session, row, EventKind.WITHDRAWN, now, signer=signer, actor=actor, policy=policy, catalog=catalog, prior=prior
    )
    if row.dimension_key == linkage_grants.DIMENSION and row.partner_key is not None:
        from dataspace.linkage.service import unlink  # here: only linkage grants pay for the import

        unlink(session, subject_id=row.subject_id, partner_key=row.partner_key, purpose_key=row.purpose_key)
    return Change(row, rid, changed=True)


def renew(
    session: Session,
    *,
    subject_id: int,
    grant_id: int,
    valid_until: datetime | None,
    signer: Signer,
    actor: Principal | None = None,
    clock: Clock = utcnow,
    policy: ReceiptPolicy = DEFAULT_POLICY,
) -> Change:
    """Move the end of a running grant's window (``None``: until withdrawn)."""
    now = clock()
    row, catalog, prior = _load_grant(session, grant_id, subject_id=subject_id)
    # A concurrent change of the same grant (another renewal, a withdrawal) makes the compare-and-set fail;
    # ``_transition`` then re-reads the row and the renewal is decided again on what is now stored.
    for _ in range(CONCURRENT_ATTEMPTS):
        if current_state(row, now) != GrantState.ACTIVE.value:
            raise Conflict("only a running grant can be renewed; grant consent again instead")
        try:
            renewed = consent.renew(to_domain(row), now, valid_until)
        except consent.InvalidGrant as exc:
            raise InvalidInput(str(exc)) from None
        if renewed.valid_until == row.valid_until:
            return Change(row, _latest_receipt_id(session, row.id), changed=False)
        if _transition(session, row, {"valid_until": renewed.valid_until, "updated_at": now}):
            break
    else:
        raise ConcurrentChange("the grant changed concurrently")
    rid = _record_change(
        session, row, EventKind.RENEWED, now, signer=signer, actor=actor, policy=policy, catalog=catalog, prior=prior
    )
    return Change(row, rid, changed=True)


def expire_due(
    session: Session,
    *,
    signer: Signer,
    clock: Clock = utcnow,
    limit: int = 10_000,
    policy: ReceiptPolicy = DEFAULT_POLICY,
) -> int:
    """Materialize expiry of grants past their window (evaluation never waits for this: it checks times)."""
    now = clock()
    rows = list(
        session.scalars(
            select(ConsentGrant)
            .where(ConsentGrant.state == GrantState.ACTIVE.value, ConsentGrant.valid_until <= now)
            .order_by(ConsentGrant.id)
            .limit(limit)
        )
    )
    return sum(_expire_row(session, row, now, signer=signer, policy=policy) is not None for row in rows)


# --- reads ----------------------------------------------------------------------------------------------
def list_grants(session: Session, *, subject_id: int, include_ended: bool = False) -> list[ConsentGrant]:
    stmt = select(ConsentGrant).where(ConsentGrant.subject_id == subject_id).order_by(ConsentGrant.id)
    if not include_ended:
        stmt = stmt.where(ConsentGrant.state == GrantState.ACTIVE.value)
    return list(session.scalars(stmt))


def history(session: Session, *, subject_id: int, limit: int = 500, before_id: int | None = None) -> list[ConsentEvent]:
    stmt = select(ConsentEvent).where(ConsentEvent.subject_id == subject_id)
    if before_id is not None:
        stmt = stmt.where(ConsentEvent.id < before_id)
    return list(session.scalars(stmt.order_by(ConsentEvent.id.desc()).limit(limit)))


def history_view(
    session: Session, *, subject_id: int, limit: int = 500, before_id: int | None = None, clock: Clock = utcnow
) -> list[dict[str, Any]]:
    """The subject's consent events, newest first, each with what its grant covers and the grant's state as
    of now (a grant past its window reads as expired before the sweep has recorded it)."""
    now = clock()
    stmt = (
        select(ConsentEvent, ConsentGrant)
        .join(ConsentGrant, ConsentGrant.id == ConsentEvent.grant_id)
        .where(ConsentEvent.subject_id == subject_id)
    )
    if before_id is not None:
        stmt = stmt.where(ConsentEvent.id < before_id)
    out = []
    for event, grant in session.execute(stmt.order_by(ConsentEvent.id.desc()).limit(limit)):
        out.append(
            {
                "id": event.id,
                "grant_id": event.grant_id,
                "kind": event.kind,
                "state": event.state,
                "at": event.at,
                "valid_from": event.valid_from,
                "valid_until": event.valid_until,
                "granularity": event.granularity,
                "receipt_id": event.receipt_id,
                "grant_state": current_state(grant, now),
                "field": grant.field_key,
                "dimension": grant.dimension_key,
                "purpose": grant.purpose_key,
                "partner": grant.partner_key,
                "partner_category": grant.partner_category,
            }
        )
    return out


def get_receipt(session: Session, *, subject_id: int, receipt_id: str) -> ConsentReceipt:
    row = session.get(ConsentReceipt, receipt_id)
    if row is None or row.subject_id != subject_id:
        raise NotFound("no such receipt")
    return row


def field_ref(field: Field) -> FieldRef:
    return FieldRef(field.key, field.dimension_key, sensitive=field.sensitivity == "sensitive")


def partner_ref(partner: Partner) -> PartnerRef:
    return PartnerRef(partner.key, partner.category)


def matrix(session: Session, *, subject_id: int, clock: Clock = utcnow) -> dict[str, Any]:
    """The customer's consent matrix: every active field (with its data-manual text and the points it
    would earn) x purpose x partner, whether it is permitted now and by which grants."""
    now = clock()
    fields = list(
        session.scalars(select(Field).where(Field.status == "active").order_by(Field.dimension_key, Field.key))
    )
    purposes = list(session.scalars(select(Purpose).order_by(Purpose.key)))
    partners = list(session.scalars(select(Partner).where(Partner.status == "active").order_by(Partner.key)))
    rows = list_grants(session, subject_id=subject_id)
    grants = [to_domain(r) for r in rows]
    # What the customer sees is true now: a grant past its window reads as expired before the sweep runs.
    shown = [grant_view(r, now) for r in rows]
    cells = []
    for f in fields:
        fr = field_ref(f)
        for p in purposes:
            for partner in partners:
                pr = partner_ref(partner)
                by = [g.id for g in grants if g.in_force(now) and g.scope.covers(fr, pr, p.key)]
                cells.append(
                    {"field": f.key, "purpose": p.key, "partner": partner.key, "permitted": bool(by), "grant_ids": by}
                )
    return {
        "subject_id": subject_id,
        "at": now,
        "fields": [
            {
                "key": f.key,
                "dimension": f.dimension_key,
                "label": f.label,
                "description": f.description,
                "collection_purpose": f.collection_purpose,
                "used_for": f.used_for,
                "storage_location": f.storage_location,
                "sharing_scope": f.sharing_scope,
                "retention_days": f.retention_days,
                "sensitivity": f.sensitivity,
                "points_value": f.points_value,
                "i18n": f.i18n,
            }
            for f in fields
        ],
        "purposes": [
            {
                "key": p.key,
                "label": p.label,
                "description": p.description,
                "dpv_term": p.dpv_term,
                "lawful_basis": p.lawful_basis,
                "i18n": p.i18n,
            }
            for p in purposes
        ],
        "partners": [
            {"key": p.key, "name": p.name, "category": p.category, "description": p.description, "i18n": p.i18n}
            for p in partners
        ],
        "grants": shown,
        "cells": cells,
    }


# --- evaluation -----------------------------------------------------------------------------------------
_CODE_BITS = 20  # a row's (target, recipient, level) code; subject ids (< 2**31) go above it


def load_grant_table(
    session: Session, *, purpose: str, partner: PartnerRef, fields: Sequence[FieldRef], at: datetime
) -> GrantTable:
    """The grants in force at ``at`` that can matter for (purpose, partner, fields), as a columnar table.

    SQL does the filtering, including the validity window at ``at``; so the table answers for ``at`` only:
    every row carries the window [at, at + 1 µs). SQL also encodes each row into one integer,
    ``subject_id << 20 | target << 3 | recipient << 2 | level``, with target/recipient codes indexing the
    tables' ``targets``/``recipients`` (known up front: the wanted fields and their dimensions, the partner
    and its category), and rows are read straight off the driver's cursor: a million grants load in well
    under a second (building Python rows per grant took 3-5 s, converting them per row 11-14 s).
    """
    field_keys = sorted({f.key for f in fields})
    dimensions = sorted({f.dimension for f in fields})
    targets = tuple([f"f:{k}" for k in field_keys] + [f"d:{d}" for d in dimensions])
    if len(targets) >= 1 << (_CODE_BITS - 3):
        raise InvalidInput("too many fields in one evaluation")
    rows: Sequence[Any] = []
    if targets:  # no field asked for: no grant can matter (and CASE needs at least one branch)
        target = case(
            *[(ConsentGrant.field_key == k, i) for i, k in enumerate(field_keys)],
            *[(ConsentGrant.dimension_key == d, len(field_keys) + i) for i, d in enumerate(dimensions)],
        )
        recipient = case((ConsentGrant.partner_key == partner.key, 0), else_=1)
        level = case(*[(ConsentGrant.granularity == g.value, g.level) for g in Granularity])
        packed = (ConsentGrant.subject_id.cast(BigInteger) * (1 << _CODE_BITS)) + target * 8 + recipient * 4 + level
        stmt = select(packed).where(
            ConsentGrant.purpose_key == purpose,
            or_(ConsentGrant.partner_key == partner.key, ConsentGrant.partner_category == partner.category),
            or_(ConsentGrant.field_key.in_(field_keys), ConsentGrant.dimension_key.in_(dimensions)),
            ConsentGrant.valid_from <= at,
            or_(ConsentGrant.valid_until.is_(None), ConsentGrant.valid_until > at),
            or_(ConsentGrant.withdrawn_at.is_(None), ConsentGrant.withdrawn_at > at),
        )
        result = session.connection().execute(stmt)  # Core execution: a CursorResult
        rows = result.cursor.fetchall()  # plain DB-API tuples: no per-row Row objects
        result.close()
    codes = np.array(rows, dtype=np.int64).reshape(-1) if rows else np.zeros(0, np.int64)
    del rows
    low = codes & ((1 << _CODE_BITS) - 1)
    n = codes.size
    start = to_micros(at)
    return GrantTable(
        subject=codes >> _CODE_BITS,
        target=(low >> 3).astype(np.int32),
        recipient=((low >> 2) & 1).astype(np.int32),
        purpose=np.zeros(n, np.int32),
        level=(low & 3).astype(np.int8),
        start=np.full(n, start, np.int64),
        end=np.full(n, start + 1, np.int64),
        targets=targets,
        recipients=(f"p:{partner.key}", f"c:{partner.category}"),
        purposes=(purpose,),
    )


def _refs(
    session: Session, partner_key: str, purpose_key: str, field_keys: Iterable[str]
) -> tuple[PartnerRef, list[FieldRef]]:
    partner = session.scalar(select(Partner).where(Partner.key == partner_key))
    if partner is None:
        raise InvalidInput(f"unknown partner {partner_key!r}")
    if session.get(Purpose, purpose_key) is None:
        raise InvalidInput(f"unknown purpose {purpose_key!r}")
    keys = list(field_keys)
    found = {f.key: f for f in session.scalars(select(Field).where(Field.key.in_(keys)))}
    missing = [k for k in keys if k not in found]
    if missing:
        raise InvalidInput(f"unknown field {missing[0]!r}")
    return partner_ref(partner), [field_ref(found[k]) for k in keys]


def is_permitted(
    session: Session,
    *,
    subject_id: int,
    field_key: str,
    partner_key: str,
    purpose_key: str,
    at: datetime | None = None,
    granularity: Granularity = Granularity.GENERALIZED,
) -> bool:
    at = at or utcnow()
    partner, (wanted,) = _refs(session, partner_key, purpose_key, [field_key])
    rows = session.scalars(
        select(ConsentGrant).where(ConsentGrant.subject_id == subject_id, ConsentGrant.purpose_key == purpose_key)
    )
    return consent.is_permitted(
        [to_domain(r) for r in rows],
        subject_id=subject_id,
        field=wanted,
        partner=partner,
        purpose=purpose_key,
        at=at,
        granularity=granularity,
    )


def permitted_subjects(
    session: Session,
    *,
    partner_key: str,
    purpose_key: str,
    field_keys: Sequence[str],
    at: datetime | None = None,
    granularity: Granularity = Granularity.GENERALIZED,
    subjects: npt.ArrayLike | None = None,
) -> npt.NDArray[np.int64]:
    """Subjects (ids, ascending) who permit every field for this partner and purpose at ``at``."""
    at = at or utcnow()
    partner, fields = _refs(session, partner_key, purpose_key, field_keys)
    table = load_grant_table(session, purpose=purpose_key, partner=partner, fields=fields, at=at)
    ids = table.subject if subjects is None else np.asarray(subjects, dtype=np.int64)
    population = np.unique(ids)
    m = consent.evaluate(
        table, subjects=population, fields=fields, partner=partner, purpose=purpose_key, at=at, granularity=granularity
    )
    return population[consent.permitted_for_all(m)]


# --- steward statistics ---------------------------------------------------------------------------------
MAX_BUCKETS = 366


def stats(
    session: Session,
    *,
    since: datetime,
    until: datetime,
    step: timedelta = timedelta(days=1),
    field_keys: Sequence[str] | None = None,
    purpose_keys: Sequence[str] | None = None,
    partner_keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Authorization rate per (field, purpose, partner) at the end of each step in [since, until]:
    permitting subjects / subjects not erased. Aggregates only; no subject is named."""
    if until < since:
        raise InvalidInput("until must not be before since")
    if step <= timedelta(0):
        raise InvalidInput("step must be positive")
    points: list[datetime] = []
    t = since
    while t <= until:
        points.append(t)
        if len(points) > MAX_BUCKETS:
            raise InvalidInput(f"at most {MAX_BUCKETS} time points; use a larger step")
        t += step
    fields_q = select(Field).where(Field.status == "active")
    if field_keys:
        fields_q = fields_q.where(Field.key.in_(list(field_keys)))
    fields = list(session.scalars(fields_q.order_by(Field.key)))
    purposes = list(purpose_keys) if purpose_keys else list(session.scalars(select(Purpose.key).order_by(Purpose.key)))
    partners_q = select(Partner).order_by(Partner.key)
    if partner_keys:
        partners_q = partners_q.where(Partner.key.in_(list(partner_keys)))
    partners = list(session.scalars(partners_q))
    population = np.fromiter(session.scalars(select(Subject.id).where(Subject.erased_at.is_(None))), np.int64)
    refs = [field_ref(f) for f in fields]
    series = []
    for purpose in purposes:
        for partner in partners:
            pr = partner_ref(partner)
            for at in points:
                table = load_grant_table(session, purpose=purpose, partner=pr, fields=refs, at=at)
                m = consent.evaluate(table, subjects=population, fields=refs, partner=pr, purpose=purpose, at=at)
                counts = m.sum(axis=0)
                for j, f in enumerate(fields):
                    permitted = int(counts[j]) if len(population) else 0
                    series.append(
                        {
                            "at": at,
                            "field": f.key,
                            "purpose": purpose,
                            "partner": partner.key,
                            "permitted": permitted,
                            "subjects": len(population),
                            "rate": permitted / len(population) if len(population) else 0.0,
                        }
                    )
    return {"since": since, "until": until, "step_seconds": int(step.total_seconds()), "series": series}
