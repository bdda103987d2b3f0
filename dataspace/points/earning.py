"""Earning points: the one-time authorization bonus for a field (held back and credited set-based inside a
group-commit batch) and usage points for the customers whose data a job used."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.catalog.models import Field
from dataspace.db import allocate_ids, bulk_insert, held_back, insert_later
from dataspace.errors import InvalidInput
from dataspace.points.ledger import (
    ACCOUNTS,
    ISSUANCE,
    LOTS,
    POSTINGS,
    TRANSACTIONS,
    check_balanced,
    lock_customer,
    lock_customers,
    move_customer,
    record_transaction,
    system_account,
)
from dataspace.points.models import (
    PointsAccount,
    PointsLot,
    PointsTransaction,
)
from dataspace.principal import Principal

DEFAULT_VALIDITY = timedelta(days=365)
USAGE_POINTS_PER_FIELD = 1

_INSERT_BONUS_TX = {
    name: dialect_insert(TRANSACTIONS)
    .on_conflict_do_nothing(index_elements=[TRANSACTIONS.c.idempotency_key])
    .returning(TRANSACTIONS.c.idempotency_key, TRANSACTIONS.c.id)
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_DELTA = bindparam("b_delta", type_=ACCOUNTS.c.balance.type)
_CREDIT_SUBJECTS = (
    update(ACCOUNTS)
    .where(ACCOUNTS.c.subject_id.in_(bindparam("b_subjects", expanding=True)))
    .values(
        balance=ACCOUNTS.c.balance + _DELTA,
        lifetime_earned=ACCOUNTS.c.lifetime_earned + bindparam("b_earned", type_=ACCOUNTS.c.lifetime_earned.type),
        version=ACCOUNTS.c.version + 1,
    )
    .returning(ACCOUNTS.c.subject_id, ACCOUNTS.c.id)
)


# --- earning -----------------------------------------------------------------------------------------


def credit(
    session: Session,
    account: PointsAccount,
    *,
    kind: str,
    key: str,
    points: int,
    reason: str,
    reference: str | None,
    now: datetime,
    valid_for: timedelta | None,
    request_hash: str | None = None,
    corrects_id: int | None = None,
) -> PointsTransaction:
    tx = record_transaction(
        session,
        kind=kind,
        key=key,
        legs=[(system_account(session, ISSUANCE), -points), (account.id, points)],
        reason=reason,
        reference=reference,
        now=now,
        request_hash=request_hash,
        corrects_id=corrects_id,
    )
    session.add(
        PointsLot(
            account_id=account.id,
            transaction_id=tx.id,
            amount=points,
            remaining=points,
            earned_at=now,
            expires_at=now + valid_for if valid_for else None,
        )
    )
    move_customer(session, account.id, points, earned=points)
    return tx


def _bulk_credit(
    session: Session,
    credits: Sequence[tuple[int, str, int]],
    *,
    kind: str,
    reason: str,
    reference: str | None,
    now: datetime,
    valid_for: timedelta | None,
) -> None:
    """Issue (account_id, idempotency key, points) credits to locked customer accounts, set-based: ids drawn
    in one statement, transactions, postings and lots written through the driver's bulk path (COPY on
    PostgreSQL), balances moved by one UPDATE per distinct amount. The caller has checked the keys under
    the accounts' locks; a duplicate key would still fail the whole transaction on the unique index."""
    issuance = system_account(session, ISSUANCE)
    tx_ids = allocate_ids(session, "points_transactions", len(credits))
    bulk_insert(
        session,
        "points_transactions",
        ("id", "kind", "idempotency_key", "request_hash", "reason", "reference", "corrects_id", "created_at"),
        [
            (tx_id, kind, key, None, reason, reference, None, now)
            for tx_id, (_, key, _) in zip(tx_ids, credits, strict=True)
        ],
    )
    postings: list[tuple[object, ...]] = []
    lots: list[tuple[object, ...]] = []
    expires = now + valid_for if valid_for else None
    by_amount: dict[int, list[int]] = defaultdict(list)
    for tx_id, (account_id, _, points) in zip(tx_ids, credits, strict=True):
        legs = [(issuance, -points), (account_id, points)]
        check_balanced(kind, legs)
        postings += [(tx_id, a, amount, now) for a, amount in legs]
        lots.append((account_id, tx_id, points, points, now, expires))
        by_amount[points].append(account_id)
    bulk_insert(session, "points_postings", ("transaction_id", "account_id", "amount", "created_at"), postings)
    bulk_insert(
        session,
        "points_lots",
        ("account_id", "transaction_id", "amount", "remaining", "earned_at", "expires_at"),
        lots,
    )
    for points, account_ids in by_amount.items():
        session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.id.in_(account_ids))
            .values(
                balance=ACCOUNTS.c.balance + points,
                lifetime_earned=ACCOUNTS.c.lifetime_earned + points,
                version=ACCOUNTS.c.version + 1,
            )
        )


@dataclass(frozen=True)
class _Bonus:
    subject_id: int
    field_key: str
    points: int
    label: str
    now: datetime
    valid_for: timedelta | None
    actor: Principal | None

    @property
    def key(self) -> str:
        return f"authbonus:{self.subject_id}:{self.field_key}"


def _credit_bonuses(session: Session, bonuses: Sequence[_Bonus]) -> list[_Bonus]:
    """Credit authorization bonuses, each at most once ever (by its key); returns those credited now.

    Set-based, whatever the number: one INSERT of the transactions with ON CONFLICT DO NOTHING (the
    idempotency check and the insert at once: an earned bonus costs nothing more and takes no lock), one
    UPDATE ... RETURNING per distinct amount that credits the customers' accounts and locks them, then the
    postings and lots (held back to the batch's multi-row inserts inside a group commit)."""
    first: dict[str, _Bonus] = {}
    for b in bonuses:
        first.setdefault(b.key, b)
    unique = list(first.values())
    if not unique:
        return []
    conn = session.connection()
    # executemany with RETURNING: SQLAlchemy sends it as one multi-row INSERT (its "insertmanyvalues"), from
    # a statement compiled once; rows skipped by ON CONFLICT return nothing.
    rows = conn.execute(
        _INSERT_BONUS_TX[conn.dialect.name],
        [
            {
                "kind": "authorization_bonus",
                "idempotency_key": b.key,
                "request_hash": None,
                "reason": f"Bonus for authorizing: {b.label}",
                "reference": f"field:{b.field_key}",
                "corrects_id": None,
                "created_at": b.now,
            }
            for b in unique
        ],
    )
    inserted: dict[str, int] = {str(key): int(tx_id) for key, tx_id in rows}
    credited = [b for b in unique if b.key in inserted]
    if not credited:
        return []
    per_subject: dict[int, int] = defaultdict(int)
    for b in credited:
        per_subject[b.subject_id] += b.points
    by_amount: dict[int, list[int]] = defaultdict(list)
    for subject_id, total in sorted(per_subject.items()):
        by_amount[total].append(subject_id)
    account_of: dict[int, int] = {}
    for total, subject_ids in by_amount.items():
        rows = conn.execute(_CREDIT_SUBJECTS, {"b_subjects": subject_ids, "b_delta": total, "b_earned": total})
        account_of.update((int(sid), int(aid)) for sid, aid in rows)
    for subject_id, total in per_subject.items():
        if subject_id not in account_of:  # the customer's first points: open the account
            account_of[subject_id] = lock_customer(session, subject_id).id
            move_customer(session, account_of[subject_id], total, earned=total)
    issuance = system_account(session, ISSUANCE)
    for b in credited:
        tx_id, account_id = inserted[b.key], account_of[b.subject_id]
        legs = [(issuance, -b.points), (account_id, b.points)]
        check_balanced("authorization_bonus", legs)
        for a, amount in legs:
            insert_later(
                session,
                POSTINGS,
                {"transaction_id": tx_id, "account_id": a, "amount": amount, "created_at": b.now},
            )
        insert_later(
            session,
            LOTS,
            {
                "account_id": account_id,
                "transaction_id": tx_id,
                "amount": b.points,
                "remaining": b.points,
                "earned_at": b.now,
                "expires_at": b.now + b.valid_for if b.valid_for else None,
            },
        )
        record_event(
            session,
            actor=b.actor,
            action="points.bonus_awarded",
            target=f"subject:{b.subject_id}",
            details={"field": b.field_key, "points": b.points},
        )
    return credited


def _bonus(
    session: Session,
    *,
    subject_id: int,
    field_key: str,
    now: datetime,
    points: int | None,
    valid_for: timedelta | None,
    actor: Principal | None,
    label: str | None,
) -> _Bonus | None:
    """The bonus to credit, or None when the field is worth no points."""
    if points is None or label is None:
        field = session.scalars(select(Field).where(Field.key == field_key)).first()
        if points is None:
            points = field.points_value if field is not None else 0
        if label is None:
            label = field.label if field is not None else field_key
    if points < 0:
        raise InvalidInput("points must not be negative")
    if points == 0:
        return None
    return _Bonus(subject_id, field_key, points, label, now, valid_for, actor)


def award_authorization_bonus(
    session: Session,
    *,
    subject_id: int,
    field_key: str,
    now: datetime,
    points: int | None = None,
    valid_for: timedelta | None = DEFAULT_VALIDITY,
    actor: Principal | None = None,
    label: str | None = None,
) -> int:
    """Credit the one-time bonus for authorizing a high-value field; returns the points credited.

    Returns 0 when the subject already earned it for this field (so withdrawing and granting again never
    earns twice) or when the field is not worth points. ``points`` defaults to the catalog's ``points_value``.
    A caller that has read the field already passes its ``points_value`` and ``label`` (the catalog is then
    not read again).
    """
    bonus = _bonus(
        session,
        subject_id=subject_id,
        field_key=field_key,
        now=now,
        points=points,
        valid_for=valid_for,
        actor=actor,
        label=label,
    )
    return sum(b.points for b in _credit_bonuses(session, [bonus])) if bonus is not None else 0


_PENDING_BONUSES = "points_pending_bonuses"


def queue_authorization_bonus(
    session: Session,
    *,
    subject_id: int,
    field_key: str,
    now: datetime,
    points: int,
    label: str,
    valid_for: timedelta | None = DEFAULT_VALIDITY,
    actor: Principal | None = None,
) -> None:
    """``award_authorization_bonus`` for a caller that needs no answer: inside ``bonuses_batched`` the bonus
    is credited with the block's others when it ends, otherwise at once."""
    bonus = _bonus(
        session,
        subject_id=subject_id,
        field_key=field_key,
        now=now,
        points=points,
        valid_for=valid_for,
        actor=actor,
        label=label,
    )
    if bonus is None:
        return
    pending: list[_Bonus] | None = session.info.get(_PENDING_BONUSES)
    if pending is None:
        _credit_bonuses(session, [bonus])
    else:
        pending.append(bonus)


def bonuses_batched(session: Session) -> AbstractContextManager[None]:
    """Hold back ``queue_authorization_bonus`` credits of this block and credit them together (set-based)
    when it ends, in the caller's transaction. If the block raises, none is credited. Nested blocks join the
    outermost one."""
    pending: list[_Bonus] = []
    return held_back(session, _PENDING_BONUSES, pending, lambda bonuses: _credit_bonuses(session, bonuses))


def usage_points(session: Session, field_keys: Iterable[str]) -> int:
    """Points one customer earns for one use of their data in a job: a fixed amount per active field used."""
    keys = set(field_keys)
    if not keys:
        return 0
    used = (
        session.scalar(select(func.count()).select_from(Field).where(Field.key.in_(keys), Field.status == "active"))
        or 0
    )
    return int(used) * USAGE_POINTS_PER_FIELD


def award_usage(
    session: Session,
    *,
    job_id: str | int,
    credits: Iterable[tuple[int, int]],
    now: datetime,
    valid_for: timedelta | None = DEFAULT_VALIDITY,
    actor: Principal | None = None,
) -> int:
    """Credit customers whose data a job used: ``credits`` is (subject_id, points) pairs.

    Idempotent per (job, subject): running it again for the same job credits nobody twice. Returns the
    number of customers credited by this call.
    """
    per_subject: dict[int, int] = defaultdict(int)
    for subject_id, points in credits:
        if points < 0:
            raise InvalidInput("usage points must not be negative")
        per_subject[subject_id] += points
    per_subject = {s: p for s, p in per_subject.items() if p > 0}
    if not per_subject:
        return 0
    accounts = lock_customers(session, per_subject)
    keys = {s: f"usage:{job_id}:{s}" for s in per_subject}
    done: set[str] = set()
    key_list = list(keys.values())
    for i in range(0, len(key_list), 1000):
        done.update(
            session.scalars(
                select(PointsTransaction.idempotency_key).where(
                    PointsTransaction.idempotency_key.in_(key_list[i : i + 1000])
                )
            )
        )
    todo = [s for s in sorted(per_subject) if keys[s] not in done]
    if todo:
        _bulk_credit(
            session,
            [(accounts[s], keys[s], per_subject[s]) for s in todo],
            kind="usage",
            reason="Your data was used by an approved job",
            reference=f"job:{job_id}",
            now=now,
            valid_for=valid_for,
        )
    credited = len(todo)
    if credited:
        record_event(
            session, actor=actor, action="points.usage_awarded", target=f"job:{job_id}", details={"customers": credited}
        )
    return credited
