"""The points ledger: earning, expiry, redemption and corrections as balanced double-entry transactions.

Concurrency: every operation locks the customer accounts it touches first (``SELECT ... FOR NO KEY UPDATE``
in id order on PostgreSQL; SQLite transactions already hold the write lock from ``BEGIN IMMEDIATE``), then
in this fixed order: expiry sink, issuance, reward row, redemption sink. One global lock order means no
deadlocks; locking the customer first means an idempotency key is
checked only while no one else can post for that customer, so a race on the same key replays the winner.
Debits are also conditional updates (``balance >= cost``, ``stock >= quantity``) and the schema has CHECK
constraints, so a bug cannot overdraw an account or oversell a reward.

Services never commit: the caller's unit of work does, so a redemption, its postings and its audit event
are written together or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.auth.principal import Principal
from dataspace.catalog.models import Field
from dataspace.db import allocate_ids, bulk_insert, held_back, insert_later, utcnow
from dataspace.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from dataspace.points.models import (
    PointsAccount,
    PointsLot,
    PointsPosting,
    PointsTransaction,
    Redemption,
    Reward,
)
from dataspace.points.schemas import (
    ExpiringLot,
    PointsSummary,
    PostingPage,
    PostingRead,
    RedemptionRead,
    RewardCreate,
    RewardRead,
    RewardUpdate,
    TierLevel,
    TierRead,
)

DEFAULT_VALIDITY = timedelta(days=365)
EXPIRING_SOON = timedelta(days=30)
USAGE_POINTS_PER_FIELD = 1
# (name, lifetime points needed), highest first.
TIERS: tuple[tuple[str, int], ...] = (("gold", 5000), ("silver", 1000), ("bronze", 0))
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
EARNING_KINDS = ("authorization_bonus", "usage", "correction")

ISSUANCE = "issuance"
REDEMPTION_SINK = "redemption_sink"
EXPIRY_SINK = "expiry_sink"
# System accounts are locked last, in this order (see the module docstring).


# Core tables for set-based statements (the ORM's per-statement bookkeeping dominates bulk postings).
_ACCOUNTS: Table = PointsAccount.__table__  # type: ignore[assignment]
_TRANSACTIONS: Table = PointsTransaction.__table__  # type: ignore[assignment]
_POSTINGS: Table = PointsPosting.__table__  # type: ignore[assignment]
_LOTS: Table = PointsLot.__table__  # type: ignore[assignment]


# Statements run on every earning, built once (building one costs about as much CPU as running it).
_ACCOUNT_BY_CODE = select(_ACCOUNTS.c.id).where(_ACCOUNTS.c.code == bindparam("code"))
_INSERT_BONUS_TX = {
    name: dialect_insert(_TRANSACTIONS)
    .on_conflict_do_nothing(index_elements=[_TRANSACTIONS.c.idempotency_key])
    .returning(_TRANSACTIONS.c.idempotency_key, _TRANSACTIONS.c.id)
    for name, dialect_insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_DELTA = bindparam("b_delta", type_=_ACCOUNTS.c.balance.type)
_CREDIT = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("b_id"))
    .values(
        balance=_ACCOUNTS.c.balance + _DELTA,
        lifetime_earned=_ACCOUNTS.c.lifetime_earned + bindparam("b_earned", type_=_ACCOUNTS.c.lifetime_earned.type),
        version=_ACCOUNTS.c.version + 1,
    )
)
_DEBIT = _CREDIT.where(_ACCOUNTS.c.balance >= -_DELTA)  # a debit never overdraws
_CREDIT_SUBJECTS = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.subject_id.in_(bindparam("b_subjects", expanding=True)))
    .values(
        balance=_ACCOUNTS.c.balance + _DELTA,
        lifetime_earned=_ACCOUNTS.c.lifetime_earned + bindparam("b_earned", type_=_ACCOUNTS.c.lifetime_earned.type),
        version=_ACCOUNTS.c.version + 1,
    )
    .returning(_ACCOUNTS.c.subject_id, _ACCOUNTS.c.id)
)


class UnbalancedTransactionError(AssertionError):
    """A transaction whose postings do not sum to zero: a programming error, never a user error."""


class InvariantViolationError(AssertionError):
    """``check_invariants`` found the ledger inconsistent."""


@dataclass(frozen=True)
class RedemptionResult:
    redemption: RedemptionRead
    replayed: bool


@dataclass(frozen=True)
class ExpiryResult:
    lots: int
    points: int


# --- accounts and postings ---------------------------------------------------------------------------


def _insert_ignore(session: Session, rows: list[dict[str, object]]) -> None:
    ins = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # executemany form: one cached statement batched by the driver (a multi-VALUES statement of 5,000 rows
    # was compiled afresh each time: 60% of crediting a job's usage points).
    session.execute(ins(_ACCOUNTS).on_conflict_do_nothing(), rows)


def _system_account(session: Session, code: str) -> int:
    cache: dict[str, int] = session.info.setdefault("points_system_accounts", {})
    if code not in cache:
        acc_id = session.execute(_ACCOUNT_BY_CODE, {"code": code}).scalar()
        if acc_id is None:
            _insert_ignore(session, [_account_row(code=code, kind=code, subject_id=None)])
            acc_id = session.execute(_ACCOUNT_BY_CODE, {"code": code}).scalar()
        assert acc_id is not None
        cache[code] = acc_id
    return cache[code]


def _account_row(*, code: str, kind: str, subject_id: int | None) -> dict[str, object]:
    return {
        "code": code,
        "kind": kind,
        "subject_id": subject_id,
        "balance": 0,
        "lifetime_earned": 0,
        "version": 1,
        "created_at": utcnow(),
    }


def _ensure_customers(session: Session, wanted: list[int]) -> None:
    existing = set(session.scalars(select(_ACCOUNTS.c.subject_id).where(_ACCOUNTS.c.subject_id.in_(wanted))))
    missing = [s for s in wanted if s not in existing]
    if missing:
        _insert_ignore(session, [_account_row(code=f"customer:{s}", kind="customer", subject_id=s) for s in missing])


def _lock_customers(session: Session, subject_ids: Iterable[int]) -> dict[int, int]:
    """Create missing customer accounts, then lock them all in id order; returns subject_id -> account id."""
    wanted = sorted(set(subject_ids))
    if not wanted:
        return {}
    _ensure_customers(session, wanted)
    rows = session.execute(
        select(_ACCOUNTS.c.subject_id, _ACCOUNTS.c.id)
        .where(_ACCOUNTS.c.subject_id.in_(wanted))
        .order_by(_ACCOUNTS.c.id)
        .with_for_update(key_share=True)
    ).all()
    return {int(subject): int(account) for subject, account in rows}


def _lock_customer(session: Session, subject_id: int) -> PointsAccount:
    _ensure_customers(session, [subject_id])
    return session.scalars(
        select(PointsAccount)
        .where(PointsAccount.subject_id == subject_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one()


def _check_balanced(kind: str, legs: Sequence[tuple[int, int]]) -> None:
    if not legs or any(amount == 0 for _, amount in legs):
        raise UnbalancedTransactionError(f"{kind}: a transaction needs non-zero postings")
    if sum(amount for _, amount in legs) != 0:
        raise UnbalancedTransactionError(f"{kind}: postings sum to {sum(a for _, a in legs)}, not 0")


def _record(
    session: Session,
    *,
    kind: str,
    key: str,
    legs: Sequence[tuple[int, int]],
    reason: str,
    now: datetime,
    reference: str | None = None,
    request_hash: str | None = None,
    corrects_id: int | None = None,
) -> PointsTransaction:
    """Insert one transaction and its postings; refuses anything that does not balance."""
    _check_balanced(kind, legs)
    tx = PointsTransaction(
        kind=kind,
        idempotency_key=key,
        request_hash=request_hash,
        reason=reason,
        reference=reference,
        corrects_id=corrects_id,
        created_at=now,
    )
    session.add(tx)
    session.flush()
    session.add_all(
        PointsPosting(transaction_id=tx.id, account_id=account_id, amount=amount, created_at=now)
        for account_id, amount in legs
    )
    return tx


def _move_customer(session: Session, account_id: int, delta: int, *, earned: int = 0) -> None:
    """Apply a delta to a locked customer account; a debit is conditional so it can never overdraw."""
    stmt = _DEBIT if delta < 0 else _CREDIT
    params = {"b_id": account_id, "b_delta": delta, "b_earned": earned}
    if session.connection().execute(stmt, params).rowcount != 1:
        raise InsufficientFunds("Your points balance is too low for this.")


def system_balance(session: Session, code: str) -> int:
    """A system account's balance: the sum of its postings. System accounts (issuance, sinks) keep no cached
    balance on purpose: every earning and redemption would update the same row and serialize on its lock."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(PointsPosting.amount), 0)).where(
                PointsPosting.account_id == _system_account(session, code)
            )
        )
        or 0
    )


def _balance(session: Session, account_id: int) -> int:
    return int(session.scalar(select(PointsAccount.balance).where(PointsAccount.id == account_id)) or 0)


# --- earning -----------------------------------------------------------------------------------------


def _credit(
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
    tx = _record(
        session,
        kind=kind,
        key=key,
        legs=[(_system_account(session, ISSUANCE), -points), (account.id, points)],
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
    _move_customer(session, account.id, points, earned=points)
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
    issuance = _system_account(session, ISSUANCE)
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
        _check_balanced(kind, legs)
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
            update(_ACCOUNTS)
            .where(_ACCOUNTS.c.id.in_(account_ids))
            .values(
                balance=_ACCOUNTS.c.balance + points,
                lifetime_earned=_ACCOUNTS.c.lifetime_earned + points,
                version=_ACCOUNTS.c.version + 1,
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
            account_of[subject_id] = _lock_customer(session, subject_id).id
            _move_customer(session, account_of[subject_id], total, earned=total)
    issuance = _system_account(session, ISSUANCE)
    for b in credited:
        tx_id, account_id = inserted[b.key], account_of[b.subject_id]
        legs = [(issuance, -b.points), (account_id, b.points)]
        _check_balanced("authorization_bonus", legs)
        for a, amount in legs:
            insert_later(
                session,
                _POSTINGS,
                {"transaction_id": tx_id, "account_id": a, "amount": amount, "created_at": b.now},
            )
        insert_later(
            session,
            _LOTS,
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
    accounts = _lock_customers(session, per_subject)
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


# --- expiry and spending -----------------------------------------------------------------------------


def _expire_locked(session: Session, account_id: int, now: datetime) -> ExpiryResult:
    """Expire the due lots of a locked customer account, including the expiry sink's side, at once, so a
    failure after this point (e.g. too few points left) leaves a consistent ledger even if committed."""
    lots = session.scalars(
        select(PointsLot)
        .where(PointsLot.account_id == account_id, PointsLot.remaining > 0, PointsLot.expires_at <= now)
        .order_by(PointsLot.id)
        .execution_options(populate_existing=True)
    ).all()
    total = 0
    for lot in lots:
        amount = lot.remaining
        _record(
            session,
            kind="expiry",
            key=f"expiry:{lot.id}",
            legs=[(account_id, -amount), (_system_account(session, EXPIRY_SINK), amount)],
            reason="Points expired",
            reference=f"lot:{lot.id}",
            now=now,
        )
        lot.remaining = 0
        total += amount
    if total:
        _move_customer(session, account_id, -total)
    return ExpiryResult(lots=len(lots), points=total)


def expire_points(session: Session, *, now: datetime, actor: Principal | None = None) -> ExpiryResult:
    """Post an expiry for every lot past its expiry that still has points; running it again posts nothing."""
    subjects = session.scalars(
        select(PointsAccount.subject_id)
        .join(PointsLot, PointsLot.account_id == PointsAccount.id)
        .where(PointsLot.remaining > 0, PointsLot.expires_at <= now)
        .distinct()
    ).all()
    accounts = _lock_customers(session, [s for s in subjects if s is not None])
    lots = points = 0
    for subject_id in sorted(accounts):
        result = _expire_locked(session, accounts[subject_id], now)
        lots, points = lots + result.lots, points + result.points
    if lots:
        record_event(
            session, actor=actor, action="points.expired", target="points", details={"lots": lots, "points": points}
        )
    return ExpiryResult(lots=lots, points=points)


def _consume_lots(session: Session, account_id: int, amount: int, now: datetime) -> None:
    """Take ``amount`` from the account's live lots, the soonest to expire first (no expiry last)."""
    lots = session.connection().execute(_LOTS_WITH_POINTS, {"account_id": account_id})
    _take_from_lots(session, [lot for lot in lots if lot.expires_at is None or lot.expires_at > now], amount)


def _take_from_lots(session: Session, lots: Sequence[Any], amount: int) -> None:
    """Take ``amount`` from ``lots`` (rows of ``_LOTS_WITH_POINTS``, live ones only) in their order, in one
    statement."""
    left, taken = amount, []
    for lot in lots:
        take = min(left, lot.remaining)
        taken.append({"b_id": lot.id, "b_remaining": lot.remaining - take})
        left -= take
        if left == 0:
            break
    if left:
        raise InsufficientFunds("Your points balance is too low for this.")
    session.connection().execute(_SET_LOT_REMAINING, taken)


def _request_hash(body: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_idempotency_key(key: str) -> None:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput("Idempotency-Key must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'.")


# The statements of a redemption, built once. The reward's row is the one lock every redemption of that
# reward shares: its stock is taken last, so the lock is held only from there to the commit.
_REWARDS: Table = Reward.__table__  # type: ignore[assignment]
_REDEMPTIONS: Table = Redemption.__table__  # type: ignore[assignment]
_LOCK_CUSTOMER_BALANCE = (
    select(_ACCOUNTS.c.id, _ACCOUNTS.c.balance)
    .where(_ACCOUNTS.c.subject_id == bindparam("subject_id"))
    .with_for_update(key_share=True)
)
_PREVIOUS_REDEMPTION = select(_REDEMPTIONS.c.request_hash, _REDEMPTIONS.c.response).where(
    _REDEMPTIONS.c.subject_id == bindparam("subject_id"), _REDEMPTIONS.c.idempotency_key == bindparam("key")
)
_REWARD_BY_KEY = select(_REWARDS.c.id, _REWARDS.c.key, _REWARDS.c.name, _REWARDS.c.cost, _REWARDS.c.active).where(
    _REWARDS.c.key == bindparam("key")
)
_LOTS_WITH_POINTS = (  # the soonest to expire first, no expiry last
    select(_LOTS.c.id, _LOTS.c.remaining, _LOTS.c.expires_at)
    .where(_LOTS.c.account_id == bindparam("account_id"), _LOTS.c.remaining > 0)
    .order_by(_LOTS.c.expires_at.is_(None), _LOTS.c.expires_at, _LOTS.c.id)
)
_SET_LOT_REMAINING = (
    update(_LOTS)
    .where(_LOTS.c.id == bindparam("b_id"))
    .values(remaining=bindparam("b_remaining", type_=_LOTS.c.remaining.type))
)
_INSERT_TX = insert(_TRANSACTIONS).returning(_TRANSACTIONS.c.id)
_TAKE_STOCK = (
    update(_REWARDS)
    .where(
        _REWARDS.c.id == bindparam("b_id"),
        _REWARDS.c.stock >= bindparam("b_quantity"),
        _REWARDS.c.cost == bindparam("b_cost"),
        _REWARDS.c.active.is_(True),
    )
    .values(stock=_REWARDS.c.stock - bindparam("b_quantity"), version=_REWARDS.c.version + 1)
)
_INSERT_REDEMPTION = insert(_REDEMPTIONS).returning(_REDEMPTIONS.c.id)
_SET_REDEMPTION_RESPONSE = (
    update(_REDEMPTIONS)
    .where(_REDEMPTIONS.c.id == bindparam("b_id"))
    .values(response=bindparam("b_response", type_=_REDEMPTIONS.c.response.type))
)


# Crockford's base32 without I, L, O, U: easy to read out and type. 16 symbols = 80 random bits.
_VOUCHER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def voucher_code() -> str:
    """A fresh voucher code, ``XXXX-XXXX-XXXX-XXXX``; unguessable, so holding it is proof of the redemption."""
    symbols = "".join(secrets.choice(_VOUCHER_ALPHABET) for _ in range(16))
    return "-".join(symbols[i : i + 4] for i in range(0, 16, 4))


def redeem(
    session: Session,
    *,
    subject_id: int,
    reward_key: str,
    idempotency_key: str,
    now: datetime,
    quantity: int = 1,
    actor: Principal | None = None,
) -> RedemptionResult:
    """Spend points on a reward, exactly once per Idempotency-Key.

    The same key with the same request returns the stored result (``replayed=True``) and posts nothing;
    the same key with a different request raises ``Conflict``. A failed redemption (too few points, out of
    stock) stores nothing, so the key may be retried.
    """
    _check_idempotency_key(idempotency_key)
    if not 1 <= quantity <= 100:
        raise InvalidInput("quantity must be between 1 and 100")
    request_hash = _request_hash({"reward_key": reward_key, "quantity": quantity})
    conn = session.connection()
    locked = conn.execute(_LOCK_CUSTOMER_BALANCE, {"subject_id": subject_id}).first()
    if locked is None:  # no account yet: create it (and so hold no points)
        account_id, balance = _lock_customer(session, subject_id).id, 0
    else:
        account_id, balance = int(locked[0]), int(locked[1])
    previous = conn.execute(_PREVIOUS_REDEMPTION, {"subject_id": subject_id, "key": idempotency_key}).first()
    if previous is not None:
        if hmac.compare_digest(previous[0], request_hash):
            return RedemptionResult(RedemptionRead.model_validate(previous[1]), replayed=True)
        raise Conflict("This Idempotency-Key was already used with a different request; use a new key.")

    reward = conn.execute(_REWARD_BY_KEY, {"key": reward_key}).first()
    if reward is None or not reward.active:
        raise NotFound(f"No reward '{reward_key}' is available.")
    lots = conn.execute(_LOTS_WITH_POINTS, {"account_id": account_id}).all()
    live = [lot for lot in lots if lot.expires_at is None or lot.expires_at > now]
    if len(live) < len(lots):  # rare: some are due, expire them first (the live ones stay as read)
        _expire_locked(session, account_id, now)
        balance = _balance(session, account_id)
    cost = reward.cost * quantity
    if balance < cost:
        raise InsufficientFunds("Your points balance is too low for this reward.")
    legs = [(account_id, -cost), (_system_account(session, REDEMPTION_SINK), cost)]
    _check_balanced("redemption", legs)
    tx_id = int(
        conn.execute(
            _INSERT_TX,
            {
                "kind": "redemption",
                "idempotency_key": f"redeem:{subject_id}:{idempotency_key}",
                "request_hash": request_hash,
                "reason": f"Redeemed {quantity} x {reward.name}",
                "reference": f"reward:{reward.key}",
                "corrects_id": None,
                "created_at": now,
            },
        ).scalar_one()
    )
    for a, amount in legs:
        insert_later(
            session, _POSTINGS, {"transaction_id": tx_id, "account_id": a, "amount": amount, "created_at": now}
        )
    _take_from_lots(session, live, cost)
    _move_customer(session, account_id, -cost)
    if conn.execute(_TAKE_STOCK, {"b_id": reward.id, "b_quantity": quantity, "b_cost": reward.cost}).rowcount != 1:
        current = conn.execute(_REWARD_BY_KEY, {"key": reward_key}).one()
        if current.cost != reward.cost or not current.active:
            raise Conflict("The reward changed while you were redeeming it; please try again.")
        raise InsufficientFunds(f"'{reward.name}' is out of stock.")
    redemption_id = int(
        conn.execute(
            _INSERT_REDEMPTION,
            {
                "subject_id": subject_id,
                "reward_id": reward.id,
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                "quantity": quantity,
                "cost": cost,
                "status": "completed",
                "transaction_id": tx_id,
                "response": {},
                "created_at": now,
            },
        ).scalar_one()
    )
    read = RedemptionRead(
        id=redemption_id,
        reward_key=reward.key,
        reward_name=reward.name,
        quantity=quantity,
        cost=cost,
        status="completed",
        transaction_id=tx_id,
        balance_after=balance - cost,
        created_at=now,
        voucher_code=voucher_code(),
    )
    conn.execute(_SET_REDEMPTION_RESPONSE, {"b_id": redemption_id, "b_response": read.model_dump(mode="json")})
    record_event(
        session,
        actor=actor,
        action="reward.redeemed",
        target=f"redemption:{redemption_id}",
        details={"reward": reward.key, "quantity": quantity},
    )
    return RedemptionResult(read, replayed=False)


def post_correction(
    session: Session,
    *,
    subject_id: int,
    amount: int,
    reason: str,
    idempotency_key: str,
    now: datetime,
    corrects_transaction_id: int | None = None,
    valid_for: timedelta | None = None,
    actor: Principal | None = None,
) -> PointsTransaction:
    """Fix a customer's balance with a new transaction (postings are never edited).

    A positive amount is issued to the customer; a negative one is returned to issuance (and can never
    overdraw). Retrying with the same key and request returns the first correction.
    """
    _check_idempotency_key(idempotency_key)
    if amount == 0 or not reason.strip():
        raise InvalidInput("a correction needs a non-zero amount and a reason")
    key = f"correction:{idempotency_key}"
    request_hash = _request_hash(
        {"subject_id": subject_id, "amount": amount, "reason": reason, "corrects": corrects_transaction_id}
    )
    account = _lock_customer(session, subject_id)
    previous = session.scalars(select(PointsTransaction).where(PointsTransaction.idempotency_key == key)).first()
    if previous is not None:
        if hmac.compare_digest(previous.request_hash or "", request_hash):
            return previous
        raise Conflict("This correction key was already used with a different correction.")
    if corrects_transaction_id is not None and session.get(PointsTransaction, corrects_transaction_id) is None:
        raise NotFound("The transaction to correct does not exist.")
    if amount > 0:
        tx = _credit(
            session,
            account,
            kind="correction",
            key=key,
            points=amount,
            reason=reason,
            reference=None,
            now=now,
            valid_for=valid_for,
            request_hash=request_hash,
            corrects_id=corrects_transaction_id,
        )
    else:
        _expire_locked(session, account.id, now)
        if _balance(session, account.id) < -amount:
            raise InsufficientFunds("The correction would make the balance negative.")
        tx = _record(
            session,
            kind="correction",
            key=key,
            legs=[(account.id, amount), (_system_account(session, ISSUANCE), -amount)],
            reason=reason,
            now=now,
            request_hash=request_hash,
            corrects_id=corrects_transaction_id,
        )
        _consume_lots(session, account.id, -amount, now)
        _move_customer(session, account.id, amount, earned=amount)
    record_event(
        session,
        actor=actor,
        action="points.corrected",
        target=f"subject:{subject_id}",
        details={"transaction": tx.id, "amount": amount},
    )
    return tx


# --- customer views ----------------------------------------------------------------------------------


def tier_for(lifetime_earned: int) -> TierRead:
    for i, (name, needed) in enumerate(TIERS):
        if lifetime_earned >= needed:
            higher = TIERS[i - 1] if i > 0 else None
            return TierRead(
                name=name,
                lifetime_earned=lifetime_earned,
                next_tier=higher[0] if higher else None,
                points_to_next_tier=higher[1] - lifetime_earned if higher else None,
            )
    raise AssertionError("the lowest tier starts at 0")  # pragma: no cover


def tier_levels() -> list[TierLevel]:
    return [TierLevel(name=name, lifetime_points=needed) for name, needed in reversed(TIERS)]


def _account(session: Session, subject_id: int) -> PointsAccount | None:
    return session.scalars(
        select(PointsAccount).where(PointsAccount.subject_id == subject_id).execution_options(populate_existing=True)
    ).first()


def list_postings(session: Session, *, subject_id: int, limit: int = 50, before: int | None = None) -> PostingPage:
    """The customer's statement, newest first, paginated by posting id (``before`` is exclusive)."""
    limit = max(1, min(limit, 200))
    account = _account(session, subject_id)
    if account is None:
        return PostingPage(items=[])
    stmt = (
        select(PointsPosting, PointsTransaction)
        .join(PointsTransaction, PointsTransaction.id == PointsPosting.transaction_id)
        .where(PointsPosting.account_id == account.id)
        .order_by(PointsPosting.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(PointsPosting.id < before)
    rows = session.execute(stmt).all()
    items = [
        PostingRead(
            id=p.id,
            transaction_id=t.id,
            kind=t.kind,
            amount=p.amount,
            reason=t.reason,
            reference=t.reference,
            created_at=p.created_at,
        )
        for p, t in rows[:limit]
    ]
    return PostingPage(items=items, next_before=items[-1].id if len(rows) > limit else None)


def get_summary(session: Session, *, subject_id: int, now: datetime, recent: int = 10) -> PointsSummary:
    account = _account(session, subject_id)
    if account is None:
        return PointsSummary(
            balance=0, lifetime_earned=0, tier=tier_for(0), tiers=tier_levels(), recent=[], expiring_soon=[]
        )
    lots = session.scalars(
        select(PointsLot)
        .where(
            PointsLot.account_id == account.id,
            PointsLot.remaining > 0,
            PointsLot.expires_at > now,
            PointsLot.expires_at <= now + EXPIRING_SOON,
        )
        .order_by(PointsLot.expires_at, PointsLot.id)
    ).all()
    # Points past expiry that the sweep has not posted yet are not spendable: do not show them.
    unswept = (
        session.scalar(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
                PointsLot.account_id == account.id, PointsLot.remaining > 0, PointsLot.expires_at <= now
            )
        )
        or 0
    )
    return PointsSummary(
        balance=account.balance - int(unswept),
        lifetime_earned=account.lifetime_earned,
        tier=tier_for(account.lifetime_earned),
        tiers=tier_levels(),
        recent=list_postings(session, subject_id=subject_id, limit=recent).items,
        expiring_soon=[
            ExpiringLot(remaining=lot.remaining, expires_at=lot.expires_at)
            for lot in lots
            if lot.expires_at is not None
        ],
    )


def list_redemptions(session: Session, *, subject_id: int, limit: int = 50) -> list[RedemptionRead]:
    rows = session.scalars(
        select(Redemption)
        .where(Redemption.subject_id == subject_id)
        .order_by(Redemption.id.desc())
        .limit(max(1, min(limit, 200)))
    ).all()
    return [RedemptionRead.model_validate(r.response) for r in rows]


# --- rewards catalog ---------------------------------------------------------------------------------


def list_rewards(session: Session, *, include_inactive: bool = False) -> list[RewardRead]:
    stmt = select(Reward).order_by(Reward.cost, Reward.key)
    if not include_inactive:
        stmt = stmt.where(Reward.active.is_(True))
    return [RewardRead.model_validate(r) for r in session.scalars(stmt)]


def create_reward(session: Session, *, data: RewardCreate, actor: Principal | None = None) -> RewardRead:
    if session.scalar(select(Reward.id).where(Reward.key == data.key)) is not None:
        raise Conflict(f"A reward with key '{data.key}' already exists.")
    now = utcnow()
    reward = Reward(**data.model_dump(), version=1, created_at=now, updated_at=now)
    session.add(reward)
    session.flush()
    record_event(session, actor=actor, action="reward.created", target=f"reward:{data.key}")
    return RewardRead.model_validate(reward)


def update_reward(session: Session, *, key: str, data: RewardUpdate, actor: Principal | None = None) -> RewardRead:
    reward = session.scalars(
        select(Reward)
        .where(Reward.key == key)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).first()
    if reward is None:
        raise NotFound(f"No reward '{key}'.")
    changes = data.model_dump(exclude_unset=True, exclude={"stock_delta"})
    for name, value in changes.items():
        if value is not None:
            setattr(reward, name, value)
    if data.stock_delta:
        if reward.stock + data.stock_delta < 0:
            raise Conflict(f"Stock is {reward.stock}; it cannot go below zero.")
        reward.stock += data.stock_delta
    reward.version += 1
    reward.updated_at = utcnow()
    session.flush()
    record_event(
        session,
        actor=actor,
        action="reward.updated",
        target=f"reward:{key}",
        details={"fields": sorted([*changes, *(["stock"] if data.stock_delta else [])])},
    )
    return RewardRead.model_validate(reward)


# --- verification ------------------------------------------------------------------------------------


def check_invariants(session: Session) -> None:
    """Recompute the ledger from its postings and raise ``InvariantViolationError`` on any inconsistency."""
    total = session.scalar(select(func.coalesce(func.sum(PointsPosting.amount), 0)))
    if total != 0:
        raise InvariantViolationError(f"all postings sum to {total}, not 0")
    unbalanced = (
        session.execute(
            select(PointsPosting.transaction_id)
            .group_by(PointsPosting.transaction_id)
            .having(func.sum(PointsPosting.amount) != 0)
        )
        .scalars()
        .all()
    )
    if unbalanced:
        raise InvariantViolationError(f"unbalanced transactions: {unbalanced[:10]}")
    empty = session.scalars(
        select(PointsTransaction.id).where(~PointsTransaction.id.in_(select(PointsPosting.transaction_id)))
    ).all()
    if empty:
        raise InvariantViolationError(f"transactions without postings: {empty[:10]}")
    posted = dict(
        session.execute(
            select(PointsPosting.account_id, func.sum(PointsPosting.amount)).group_by(PointsPosting.account_id)
        ).all()
    )
    lots = dict(
        session.execute(
            select(PointsLot.account_id, func.sum(PointsLot.remaining)).group_by(PointsLot.account_id)
        ).all()
    )
    earned = dict(
        session.execute(
            select(PointsPosting.account_id, func.sum(PointsPosting.amount))
            .join(PointsTransaction, PointsTransaction.id == PointsPosting.transaction_id)
            .where(PointsTransaction.kind.in_(EARNING_KINDS))
            .group_by(PointsPosting.account_id)
        ).all()
    )
    for acc in session.scalars(select(PointsAccount).execution_options(populate_existing=True)):
        if acc.kind == "customer" and acc.balance != (posted.get(acc.id) or 0):
            raise InvariantViolationError(f"account {acc.code}: cached {acc.balance} != posted {posted.get(acc.id)}")
        if acc.kind == "customer":
            if acc.balance < 0:
                raise InvariantViolationError(f"account {acc.code} is negative")
            if acc.balance != (lots.get(acc.id) or 0):
                raise InvariantViolationError(f"account {acc.code}: balance != remaining in lots")
            if acc.lifetime_earned != (earned.get(acc.id) or 0):
                raise InvariantViolationError(f"account {acc.code}: lifetime_earned != earning postings")
    for red in session.scalars(select(Redemption)):
        amount = session.scalar(
            select(PointsPosting.amount)
            .join(PointsAccount, PointsAccount.id == PointsPosting.account_id)
            .where(PointsPosting.transaction_id == red.transaction_id, PointsAccount.kind == "customer")
        )
        if amount != -red.cost:
            raise InvariantViolationError(f"redemption {red.id}: posted {amount}, cost {red.cost}")
    if session.scalar(select(func.count()).select_from(Reward).where(Reward.stock < 0)):
        raise InvariantViolationError("a reward has negative stock")
