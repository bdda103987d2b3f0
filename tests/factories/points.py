"""Points factories: subjects, rewards, and points earned through the real earning service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from dataspace.context import Context
from dataspace.points import earning, invariants, rewards
from dataspace.points import queries as points_queries
from dataspace.points.schemas import RewardCreate
from dataspace.subjects.models import Subject

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_subjects(ctx: Context, n: int = 1) -> list[int]:
    with ctx.db.transaction() as session:
        subjects = [Subject(blind_ref=uuid.uuid4().hex) for _ in range(n)]
        session.add_all(subjects)
        session.flush()
        return [s.id for s in subjects]


def make_reward(ctx: Context, key: str = "lounge", *, cost: int = 100, stock: int = 10) -> None:
    with ctx.db.transaction() as session:
        rewards.create_reward(session, data=RewardCreate(key=key, name=f"Reward {key}", cost=cost, stock=stock))


def give(
    ctx: Context,
    subject_id: int,
    amount: int,
    *,
    field: str = "income",
    valid_for=earning.DEFAULT_VALIDITY,
    now: datetime = NOW,
) -> None:
    with ctx.db.transaction() as session:
        assert (
            earning.award_authorization_bonus(
                session,
                subject_id=subject_id,
                field_key=f"{field}-{uuid.uuid4().hex[:6]}",
                points=amount,
                now=now,
                valid_for=valid_for,
            )
            == amount
        )


def balance(ctx: Context, subject_id: int, now: datetime = NOW) -> int:
    with ctx.db.session() as session:
        return points_queries.get_summary(session, subject_id=subject_id, now=now).balance


def assert_consistent(ctx: Context) -> None:
    with ctx.db.session() as session:
        invariants.check_invariants(session)
