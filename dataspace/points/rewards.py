"""The rewards catalog: list, create and update rewards (stock, cost, active)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.errors import Conflict, NotFound
from dataspace.points.models import (
    Reward,
)
from dataspace.points.schemas import (
    RewardCreate,
    RewardRead,
    RewardUpdate,
)
from dataspace.principal import Principal

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
