"""The points ledger core: accounts, balanced double-entry transactions, lots and their expiry.

Earning (``earning``), redemption (``redemption``) and corrections (``corrections``) post through it.

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
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.errors import BrokenInvariant, InsufficientFunds, InvalidInput
from dataspace.points.models import (
    PointsAccount,
    PointsLot,
    PointsPosting,
    PointsTransaction,
)
from dataspace.principal import Principal

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ISSUANCE = "issuance"
REDEMPTION_SINK = "redemption_sink"
EXPIRY_SINK = "expiry_sink"
# System accounts are locked last, in this order (see the module docstring).


# Core tables for set-based statements (the ORM's per-statement bookkeeping dominates bulk postings).
ACCOUNTS: Table = PointsAccount.__table__  # type: ignore[assignment]
TRANSACTIONS: Table = PointsTransaction.__table__  # type: ignore[assignment]
POSTINGS: Table = PointsPosting.__table__  # type: ignore[assignment]
LOTS: Table = PointsLot.__table__  # type: ignore[assignment]


# Statements run on every earning, built once (building one costs about as much CPU as running it).
_ACCOUNT_BY_CODE = select(ACCOUNTS.c.id).where(ACCOUNTS.c.code == bindparam("code"))
_DELTA = bindparam("b_delta", type_=ACCOUNTS.c.balance.type)
_CREDIT = (
    update(ACCOUNTS)
    .where(ACCOUNTS.c.id == bindparam("b_id"))
    .values(
        balance=ACCOUNTS.c.balance + _DELTA,
        lifetime_earned=ACCOUNTS.c.lifetime_earned + bindparam("b_earned", type_=ACCOUNTS.c.lifetime_earned.type),
        version=ACCOUNTS.c.version + 1,
    )
)
_DEBIT = _CREDIT.where(ACCOUNTS.c.balance >= -_DELTA)  # a debit never overdraws


class UnbalancedTransactionError(BrokenInvariant):
    """A transaction whose postings do not sum to zero: a programming error, never a user error."""


@dataclass(frozen=True)
class ExpiryResult:
    lots: int
    points: int


# --- accounts and postings ---------------------------------------------------------------------------


def _insert_ignore(session: Session, rows: list[dict[str, object]]) -> None:
    ins = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # executemany form: one cached statement batched by the driver (a multi-VALUES statement of 5,000 rows
    # was compiled afresh each time: 60% of crediting a job's usage points).
    session.execute(ins(ACCOUNTS).on_conflict_do_nothing(), rows)


def system_account(session: Session, code: str) -> int:
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
    existing = set(session.scalars(select(ACCOUNTS.c.subject_id).where(ACCOUNTS.c.subject_id.in_(wanted))))
    missing = [s for s in wanted if s not in existing]
    if missing:
        _insert_ignore(session, [_account_row(code=f"customer:{s}", kind="customer", subject_id=s) for s in missing])


def lock_customers(session: Session, subject_ids: Iterable[int]) -> dict[int, int]:
    """Create missing customer accounts, then lock them all in id order; returns subject_id -> account id."""
    wanted = sorted(set(subject_ids))
    if not wanted:
        return {}
    _ensure_customers(session, wanted)
    rows = session.execute(
        select(ACCOUNTS.c.subject_id, ACCOUNTS.c.id)
        .where(ACCOUNTS.c.subject_id.in_(wanted))
        .order_by(ACCOUNTS.c.id)
        .with_for_update(key_share=True)
    ).all()
    return {int(subject): int(account) for subject, account in rows}


def lock_customer(session: Session, subject_id: int) -> PointsAccount:
    _ensure_customers(session, [subject_id])
    return session.scalars(
        select(PointsAccount)
        .where(PointsAccount.subject_id == subject_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one()


def check_balanced(kind: str, legs: Sequence[tuple[int, int]]) -> None:
    if not legs or any(amount == 0 for _, amount in legs):
        raise UnbalancedTransactionError(f"{kind}: a transaction needs non-zero postings")
    if sum(amount for _, amount in legs) != 0:
        raise UnbalancedTransactionError(f"{kind}: postings sum to {sum(a for _, a in legs)}, not 0")


def record_transaction(
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
    check_balanced(kind, legs)
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


def move_customer(session: Session, account_id: int, delta: int, *, earned: int = 0) -> None:
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
                PointsPosting.account_id == system_account(session, code)
            )
        )
        or 0
    )


def balance_of(session: Session, account_id: int) -> int:
    return int(session.scalar(select(PointsAccount.balance).where(PointsAccount.id == account_id)) or 0)


LOTS_WITH_POINTS = (  # the soonest to expire first, no expiry last
    select(LOTS.c.id, LOTS.c.remaining, LOTS.c.expires_at)
    .where(LOTS.c.account_id == bindparam("account_id"), LOTS.c.remaining > 0)
    .order_by(LOTS.c.expires_at.is_(None), LOTS.c.expires_at, LOTS.c.id)
)
_SET_LOT_REMAINING = (
    update(LOTS)
    .where(LOTS.c.id == bindparam("b_id"))
    .values(remaining=bindparam("b_remaining", type_=LOTS.c.remaining.type))
)


# --- expiry and spending -----------------------------------------------------------------------------


def expire_locked(session: Session, account_id: int, now: datetime) -> ExpiryResult:
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
        record_transaction(
            session,
            kind="expiry",
            key=f"expiry:{lot.id}",
            legs=[(account_id, -amount), (system_account(session, EXPIRY_SINK), amount)],
            reason="Points expired",
            reference=f"lot:{lot.id}",
            now=now,
        )
        lot.remaining = 0
        total += amount
    if total:
        move_customer(session, account_id, -total)
    return ExpiryResult(lots=len(lots), points=total)


def expire_points(session: Session, *, now: datetime, actor: Principal | None = None) -> ExpiryResult:
    """Post an expiry for every lot past its expiry that still has points; running it again posts nothing."""
    subjects = session.scalars(
        select(PointsAccount.subject_id)
        .join(PointsLot, PointsLot.account_id == PointsAccount.id)
        .where(PointsLot.remaining > 0, PointsLot.expires_at <= now)
        .distinct()
    ).all()
    accounts = lock_customers(session, [s for s in subjects if s is not None])
    lots = points = 0
    for subject_id in sorted(accounts):
        result = expire_locked(session, accounts[subject_id], now)
        lots, points = lots + result.lots, points + result.points
    if lots:
        record_event(
            session, actor=actor, action="points.expired", target="points", details={"lots": lots, "points": points}
        )
    return ExpiryResult(lots=lots, points=points)


def consume_lots(session: Session, account_id: int, amount: int, now: datetime) -> None:
    """Take ``amount`` from the account's live lots, the soonest to expire first (no expiry last)."""
    lots = session.connection().execute(LOTS_WITH_POINTS, {"account_id": account_id})
    take_from_lots(session, [lot for lot in lots if lot.expires_at is None or lot.expires_at > now], amount)


def take_from_lots(session: Session, lots: Sequence[Any], amount: int) -> None:
    """Take ``amount`` from ``lots`` (rows of ``LOTS_WITH_POINTS``, live ones only) in their order, in one
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


def request_digest(body: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_idempotency_key(key: str) -> None:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput("Idempotency-Key must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'.")
