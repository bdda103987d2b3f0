"""Linkage API bodies."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataspace.db import MAX_ID
from dataspace.linkage.models import Contribution, Declaration


def _identity() -> dict[str, dict[str, Any]]:
    return {"identity": {}}


class PartnerColumn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(max_length=64)
    data_type: Literal["integer", "number", "boolean", "string"]
    meaning: str = Field(min_length=1, max_length=500)
    transforms: dict[str, dict[str, Any]] = Field(default_factory=_identity)
    values: list[str] | None = None


class DeclarationCreate(BaseModel):
    """The partner columns a proposed contract brings (approved with the contract)."""

    model_config = ConfigDict(extra="forbid")
    contract_id: int = Field(ge=1, le=MAX_ID, strict=True)
    kind: Literal["email", "phone", "national_id"]
    columns: list[PartnerColumn] = Field(min_length=1, max_length=32)


class DeclarationRead(BaseModel):
    contract_id: int
    kind: str
    columns: list[dict[str, Any]]
    declared_by: str
    declared_at: datetime

    @classmethod
    def of(cls, row: Declaration) -> DeclarationRead:
        return cls(
            contract_id=row.contract_id,
            kind=row.kind,
            columns=list(row.columns),
            declared_by=row.declared_by,
            declared_at=row.declared_at,
        )


class LinkageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contract_id: int = Field(ge=1, le=MAX_ID, strict=True)


class LinkageRead(BaseModel):
    """A run as its partner sees it: never the exact number of matches, only the DP count once linked."""

    id: int
    contract_id: int
    kind: str
    status: str
    public_key: str  # base64: the X25519 key the partner seals its data key to
    sent: int  # points in message 1 (padded)
    columns: list[dict[str, Any]]
    noisy_matched: int | None

    @classmethod
    def of(cls, row: Contribution) -> LinkageRead:
        return cls(
            id=row.id,
            contract_id=row.contract_id,
            kind=row.kind,
            status=row.status,
            public_key=base64.b64encode(row.public_key).decode(),
            sent=row.sent,
            columns=list(row.columns),
            noisy_matched=row.noisy_matched,
        )


class MyLinkageRead(BaseModel):
    offers: list[dict[str, Any]]  # partner contributions a linkage grant would let in, with what they bring
    links: list[dict[str, Any]]  # partners that linked records about me
