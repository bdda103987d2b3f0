"""Pydantic shapes of the points API (read models returned by the service, write models it accepts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class PostingRead(BaseModel):
    """One line of a customer's statement: signed from the customer's point of view."""

    id: int
    transaction_id: int
    kind: str
    amount: int
    reason: str
    reference: str | None
    created_at: datetime


class PostingPage(BaseModel):
    items: list[PostingRead]
    next_before: int | None = Field(
        default=None, description="Pass as ?before= to get the next (older) page; null when done."
    )


class ExpiringLot(BaseModel):
    remaining: int
    expires_at: datetime


class TierRead(BaseModel):
    name: str
    lifetime_earned: int
    next_tier: str | None
    points_to_next_tier: int | None


class TierLevel(BaseModel):
    name: str
    lifetime_points: int = Field(description="Points earned in total (spending never lowers it) to reach it.")


class PointsSummary(BaseModel):
    balance: int
    lifetime_earned: int
    tier: TierRead
    tiers: list[TierLevel] = Field(default_factory=list, description="Every tier, lowest first.")
    recent: list[PostingRead]
    expiring_soon: list[ExpiringLot]


class RewardCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=KEY_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    cost: int = Field(gt=0, le=10_000_000, strict=True)
    stock: int = Field(ge=0, le=100_000_000, strict=True)
    active: bool = Field(default=True, strict=True)
    i18n: dict[str, Any] = Field(default_factory=dict)


class RewardUpdate(BaseModel):
    """Fields to change; ``stock_delta`` adds to (or takes from) the stock atomically."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    cost: int | None = Field(default=None, gt=0, le=10_000_000, strict=True)
    stock_delta: int | None = Field(default=None, ge=-100_000_000, le=100_000_000, strict=True)
    active: bool | None = Field(default=None, strict=True)
    i18n: dict[str, Any] | None = None


class RewardRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    key: str
    name: str
    description: str
    cost: int
    stock: int
    active: bool
    i18n: dict[str, Any]


class RedemptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reward_key: str = Field(pattern=KEY_PATTERN)
    quantity: int = Field(default=1, ge=1, le=100, strict=True)


class RedemptionRead(BaseModel):
    """The stored response of a redemption; a retry with the same Idempotency-Key returns it verbatim."""

    id: int
    reward_key: str
    reward_name: str
    quantity: int
    cost: int
    status: str
    transaction_id: int
    balance_after: int
    created_at: datetime
    voucher_code: str | None = Field(
        default=None, description="The code to show where the reward is claimed; random, one per redemption."
    )
