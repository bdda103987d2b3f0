"""The customer's views of the ledger: balance and tier, statement, redemptions (pydantic ``*Read`` schemas)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.points.models import (
    PointsAccount,
    PointsLot,
    PointsPosting,
    PointsTransaction,
    Redemption,
)
from dataspace.points.schemas import (
    ExpiringLot,
    PointsSummary,
    PostingPage,
    PostingRead,
    RedemptionRead,
    TierLevel,
    TierRead,
)

EXPIRING_SOON = timedelta(days=30)
# (name, lifetime points needed), highest first.
TIERS: tuple[tuple[str, int], ...] = (("gold", 5000), ("silver", 1000), ("bronze", 0))


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
