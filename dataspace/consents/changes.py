"""The consent write path: grant, withdraw, renew and expire grants.

Every change appends a ``consent_events`` row, updates the materialized ``consent_grants`` row and stores a
signed receipt, in the caller's transaction (services never commit), and sets off its consequences (the
authorization bonus, the partner's event). Timestamps come from ``clock`` (the server's UTC clock unless a
test injects one). Another customer's grant is "not found".
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, Update, bindparam, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value

import consent
from consent import (
    DPV_STATUS,
    EventKind,
    GrantState,
    Granularity,
    ReceiptEvent,
    Scope,
    Signer,
)
from dataspace.audit import batched as audit_batch
from dataspace.audit import record_event
from dataspace.catalog.models import Field, Purpose
from dataspace.consents.lookup import (
    EVENTS,
    FIELD_COLUMNS,
    GRANT_WIDTH,
    GRANTS,
    PARTNER_COLUMNS,
    PURPOSE_COLUMNS,
    ChangeCatalog,
    as_loaded,
    catalog_rows,
    grant_of,
    latest_receipt_id,
    load_catalog,
    load_grant,
)
from dataspace.consents.receipts import DEFAULT_POLICY, ReceiptPolicy, receipt_body
from dataspace.db import insert_later, utcnow
from dataspace.errors import ConcurrentChange, Conflict, InvalidInput, NotFound
from dataspace.events import service as events
from dataspace.grants.convert import Clock, current_state, to_domain
from dataspace.grants.models import ConsentGrant, ConsentReceipt
from dataspace.linkage import grants as linkage_grants
from dataspace.partners.models import Partner
from dataspace.points import earning as points
from dataspace.principal import SYSTEM, Principal
from dataspace.subjects.models import Subject

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


def _active_key(subject_id: int, scope: Scope) -> str:
    return f"{subject_id}|{scope.key}"


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
        *PURPOSE_COLUMNS,
        *FIELD_COLUMNS,
        *PARTNER_COLUMNS,
        exists().where(aliased(Partner).category == bindparam("category")),
        *GRANTS.c,
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
) -> tuple[ChangeCatalog, ConsentGrant | None]:
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
    purpose, field, partner = catalog_rows(found[1:])
    category_known = found[-GRANT_WIDTH - 1]
    existing = grant_of(session, found[-GRANT_WIDTH:]) if found[-GRANT_WIDTH] is not None else None
    if purpose is None:
        raise InvalidInput(f"unknown purpose {req.purpose!r}")
    if req.field is not None and (field is None or field.status != "active"):
        raise InvalidInput(f"unknown field {req.field!r}")
    catalog = load_catalog(session, purpose, field, req.dimension, partner)
    if req.dimension is not None and catalog.dimension_label is None:
        raise InvalidInput(f"unknown dimension {req.dimension!r}")
    if req.partner is not None and (partner is None or partner.status != "active"):
        raise InvalidInput(f"unknown partner {req.partner!r}")
    if req.partner_category is not None and not category_known:
        raise InvalidInput(f"unknown partner category {req.partner_category!r}")
    if req.dimension == linkage_grants.DIMENSION and req.partner is None:
        raise InvalidInput("a linkage grant names one partner")
    return catalog, existing


def _record_change(
    session: Session,
    row: ConsentGrant,
    kind: EventKind,
    at: datetime,
    *,
    signer: Signer,
    actor: Principal | None,
    policy: ReceiptPolicy,
    catalog: ChangeCatalog | None = None,
    prior: Sequence[ReceiptEvent] | None = None,
) -> str:
    """Append the event, sign and store its receipt, write the audit entry and the consequences; returns the
    receipt id. ``catalog`` and ``prior`` (the grant's events before this one) are read here unless given."""
    if catalog is None or prior is None:
        _, loaded_catalog, loaded_prior = load_grant(session, row.id)
        catalog = loaded_catalog if catalog is None else catalog
        prior = loaded_prior if prior is None else prior
    at = at.astimezone(UTC)  # as stored and read back: receipts show UTC times
    receipt_id = str(uuid.uuid4())
    insert_later(
        session,
        EVENTS,
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
    signed = consent.sign_receipt(receipt_body(row, history, receipt_id, policy, catalog), signer)
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
    session: Session,
    row: ConsentGrant,
    kind: EventKind,
    at: datetime,
    actor: Principal | None,
    *,
    catalog: ChangeCatalog,
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


# --- changes --------------------------------------------------------------------------------------------
_RECEIPTS: Table = ConsentReceipt.__table__  # type: ignore[assignment]
_INSERT_ACTIVE = {
    name: dialect_insert(GRANTS)
    .on_conflict_do_nothing(index_elements=[GRANTS.c.active_scope_key])
    .returning(GRANTS.c.id)
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
    return as_loaded(session, {"id": grant_id, "withdrawn_at": None, **stored})


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
    return Change(existing, latest_receipt_id(session, existing.id), changed=False)


@functools.cache
def _transition_statement(columns: tuple[str, ...]) -> Update:
    return (
        update(GRANTS)
        .where(
            GRANTS.c.id == bindparam("b_id"),
            GRANTS.c.state == GrantState.ACTIVE.value,
            GRANTS.c.version == bindparam("b_version"),
        )
        .values({c: bindparam(f"v_{c}", type_=GRANTS.c[c].type) for c in columns})
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
    catalog: ChangeCatalog | None = None,
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
    row, catalog, prior = load_grant(session, grant_id, subject_id=subject_id)
    if row.state == GrantState.ACTIVE.value and row.valid_until is not None and row.valid_until <= now:
        rid = _expire_row(session, row, now, signer=signer, policy=policy, catalog=catalog, prior=prior)
        return Change(row, rid or latest_receipt_id(session, row.id), changed=rid is not None)
    if row.state != GrantState.ACTIVE.value:
        return Change(row, latest_receipt_id(session, row.id), changed=False)
    if not _transition(
        session,
        row,
        {"state": GrantState.WITHDRAWN.value, "withdrawn_at": now, "active_scope_key": None, "updated_at": now},
    ):
        return Change(row, latest_receipt_id(session, row.id), changed=False)
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
    row, catalog, prior = load_grant(session, grant_id, subject_id=subject_id)
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
            return Change(row, latest_receipt_id(session, row.id), changed=False)
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
