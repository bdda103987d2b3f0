"""Points and rewards: the customer's balance and statement, the rewards catalog, idempotent redemptions.

Writes commit before the response leaves the server (the unit of work, or the group committer for
redemptions): an acknowledged redemption is never lost.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status
from sqlalchemy.orm import Session

from dataspace.db import MAX_ID, utcnow
from dataspace.http.deps import GroupWrites, ReadSession, WriteSession, authorize, current_subject, subject_of
from dataspace.points import queries as points_queries
from dataspace.points import redemption as points_redemption
from dataspace.points import rewards as points_rewards
from dataspace.points.schemas import (
    PointsSummary,
    PostingPage,
    RedemptionCreate,
    RedemptionRead,
    RewardCreate,
    RewardRead,
    RewardUpdate,
)
from dataspace.principal import Principal

router = APIRouter(tags=["points"])

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]{1,128}$",
        description="A client-chosen key; retrying with the same key and body returns the same redemption.",
    ),
]


@router.get("/v1/me/points", response_model=PointsSummary)
def my_points(
    *,
    subject_id: int = Depends(current_subject("me.points", "read")),
    session: ReadSession,
) -> PointsSummary:
    return points_queries.get_summary(session, subject_id=subject_id, now=utcnow())


@router.get("/v1/me/points/postings", response_model=PostingPage)
def my_postings(
    *,
    limit: int = Query(default=50, ge=1, le=200),
    before: int | None = Query(default=None, ge=1, le=MAX_ID, description="The next_before of the previous page."),
    subject_id: int = Depends(current_subject("me.points", "read")),
    session: ReadSession,
) -> PostingPage:
    return points_queries.list_postings(session, subject_id=subject_id, limit=limit, before=before)


@router.get("/v1/rewards", response_model=list[RewardRead])
def rewards(
    *,
    include_inactive: bool = Query(default=False, description="Stewards only: also list retired rewards."),
    principal: Principal = Depends(authorize("rewards", "read")),
    session: ReadSession,
) -> list[RewardRead]:
    return points_rewards.list_rewards(session, include_inactive=include_inactive and principal.role == "steward")


@router.post("/v1/rewards", response_model=RewardRead, status_code=status.HTTP_201_CREATED)
def create_reward(
    *,
    body: RewardCreate,
    principal: Principal = Depends(authorize("rewards", "write")),
    session: WriteSession,
) -> RewardRead:
    return points_rewards.create_reward(session, data=body, actor=principal)


@router.patch("/v1/rewards/{key}", response_model=RewardRead)
def update_reward(
    *,
    key: str,
    body: RewardUpdate,
    principal: Principal = Depends(authorize("rewards", "write")),
    session: WriteSession,
) -> RewardRead:
    return points_rewards.update_reward(session, key=key, data=body, actor=principal)


@router.post("/v1/me/redemptions", response_model=RedemptionRead, status_code=status.HTTP_201_CREATED)
async def redeem(
    *,
    body: RedemptionCreate,
    response: Response,
    idempotency_key: IdempotencyKey,
    principal: Principal = Depends(authorize("me.redemptions", "write")),
    writes: GroupWrites,
) -> RedemptionRead:
    subject_id = subject_of(principal)

    # Through the group committer, like consent changes: concurrent redemptions share a COMMIT, and the
    # reward's row lock is taken once per batch.
    def spend(session: Session) -> points_redemption.RedemptionResult:
        return points_redemption.redeem(
            session,
            subject_id=subject_id,
            reward_key=body.reward_key,
            quantity=body.quantity,
            idempotency_key=idempotency_key,
            now=utcnow(),
            actor=principal,
        )

    result = await writes.run(spend)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result.redemption


@router.get("/v1/me/redemptions", response_model=list[RedemptionRead])
def my_redemptions(
    *,
    limit: int = Query(default=50, ge=1, le=200),
    subject_id: int = Depends(current_subject("me.points", "read")),
    session: ReadSession,
) -> list[RedemptionRead]:
    return points_queries.list_redemptions(session, subject_id=subject_id, limit=limit)
