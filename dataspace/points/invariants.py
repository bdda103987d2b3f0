"""Verification: recompute the ledger from its postings and check every invariant it must keep."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.errors import BrokenInvariant
from dataspace.points.models import (
    PointsAccount,
    PointsLot,
    PointsPosting,
    PointsTransaction,
    Redemption,
    Reward,
)

EARNING_KINDS = ("authorization_bonus", "usage", "correction")


class InvariantViolationError(BrokenInvariant):
    """``check_invariants`` found the ledger inconsistent."""


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
