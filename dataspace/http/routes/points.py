"""Points and rewards: the customer's balance and statement, the rewards catalog, idempotent redemptions.

Write routes commit inside the handler (not in a yield dependency), so a redemption is durable before
its response leaves the server: an acknowledged redemption is never lost.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status
from sqlalchemy.orm import Session

from dataspace.auth.principal import Principal
from dataspace.context import Context
from dataspace.db import MAX_ID, utcnow
from dataspace.errors import Forbidden
from dataspace.http.deps import authorize, get_context, read_session
from dataspace.points import service as points
from dataspace.points.schemas import (
    PointsSummary,
    PostingPage,
    RedemptionCreate,
    RedemptionRead,
    RewardCreate,
    RewardRead,
    RewardUpdate,
)

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


def _subject(principal: Principal) -> int:
    if principal.subject_id is None:
        raise Forbidden()
    return principal.subject_id


@router.get("/v1/me/points", response_model=PointsSummary)
def my_points(
    principal: Principal = Depends(authorize("me.points", "read")),
    session: Session = Depends(read_session),
) -> PointsSummary:
    return points.get_summary(session, subject_id=_subject(principal), now=utcnow())


@router.get("/v1/me/points/postings", response_model=PostingPage)
def my_postings(
    limit: int = Query(default=50, ge=1, le=200),
    before: int | None = Query(default=None, ge=1, le=MAX_ID, description="The next_before of the previous page."),
    principal: Principal = Depends(authorize("me.points", "read")),
    session: Session = Depends(read_session),
) -> PostingPage:
    return points.list_postings(session, subject_id=_subject(principal), limit=limit, before=before)


@router.get("/v1/rewards", response_model=list[RewardRead])
def rewards(
    include_inactive: bool = Query(default=False, description="Stewards only: also list retired rewards."),
    principal: Principal = Depends(authorize("rewards", "read")),
    session: Session = Depends(read_session),
) -> list[RewardRead]:
    return points.list_rewards(session, include_inactive=include_inactive and principal.role == "steward")


@router.post("/v1/rewards", response_model=RewardRead, status_code=status.HTTP_201_CREATED)
def create_reward(
    body: RewardCreate,
    principal: Principal = Depends(authorize("rewards", "write")),
    ctx: Context = Depends(get_context),
) -> RewardRead:
    with ctx.db.transaction() as session:
        return points.create_reward(session, data=body, actor=principal)


@router.patch("/v1/rewards/{key}", response_model=RewardRead)
def update_reward(
    key: str,
    body: RewardUpdate,
    principal: Principal = Depends(authorize("rewards", "write")),
    ctx: Context = Depends(get_context),
) -> RewardRead:
    with ctx.db.transaction() as session:
        return points.update_reward(session, key=key, data=body, actor=principal)


@router.post("/v1/me/redemptions", response_model=RedemptionRead, status_code=status.HTTP_201_CREATED)
async def redeem(
    body: RedemptionCreate,
    response: Response,
    idempotency_key: IdempotencyKey,
    principal: Principal = Depends(authorize("me.redemptions", "write")),
    ctx: Context = Depends(get_context),
) -> RedemptionRead:
    subject_id = _subject(principal)

    # Through the group committer, like consent changes: concurrent redemptions share a COMMIT, and the
    # reward's row lock is taken once per batch.
    def spend(session: Session) -> points.RedemptionResult:
        return points.redeem(
            session,
            subject_id=subject_id,
            reward_key=body.reward_key,
            quantity=body.quantity,
            idempotency_key=idempotency_key,
            now=utcnow(),
            actor=principal,
        )

    result = await ctx.writes.run(spend)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result.redemption


@router.get("/v1/me/redemptions", response_model=list[RedemptionRead])
def my_redemptions(
    limit: int = Query(default=50, ge=1, le=200),
    principal: Principal = Depends(authorize("me.points", "read")),
    session: Session = Depends(read_session),
) -> list[RedemptionRead]:
    return points.list_redemptions(session, subject_id=_subject(principal), limit=limit)
