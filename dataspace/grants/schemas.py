"""API shapes for consents (``XCreate`` in, ``XRead`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

KEY = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"


class GrantCreate(BaseModel):
    """One switch: a field (or a whole dimension) x purpose x partner (or any partner of a category)."""

    model_config = ConfigDict(extra="forbid")

    field: str | None = Field(default=None, pattern=KEY)
    dimension: str | None = Field(default=None, pattern=KEY)
    purpose: str = Field(pattern=KEY)
    partner: str | None = Field(default=None, pattern=KEY)
    partner_category: str | None = Field(default=None, pattern=KEY)
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    granularity: str = Field(default="generalized", pattern=r"^(generalized|pseudonymized-raw)$")

    @model_validator(mode="after")
    def _one_of_each(self) -> GrantCreate:
        if (self.field is None) == (self.dimension is None):
            raise ValueError("name exactly one of field or dimension")
        if (self.partner is None) == (self.partner_category is None):
            raise ValueError("name exactly one of partner or partner_category")
        return self


class GrantRenew(BaseModel):
    model_config = ConfigDict(extra="forbid")

    valid_until: AwareDatetime | None = None


class GrantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    field: str | None = Field(validation_alias="field_key")
    dimension: str | None = Field(validation_alias="dimension_key")
    purpose: str = Field(validation_alias="purpose_key")
    partner: str | None = Field(validation_alias="partner_key")
    partner_category: str | None
    granularity: str
    valid_from: datetime
    valid_until: datetime | None
    state: str
    withdrawn_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ChangeRead(BaseModel):
    grant: GrantRead
    receipt_id: str
    changed: bool


class EventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    grant_id: int
    kind: str
    state: str
    at: datetime
    valid_from: datetime
    valid_until: datetime | None
    granularity: str
    receipt_id: str
    # The grant this event belongs to: what it covers and its state now (computed when read).
    grant_state: str = Field(description="The grant's state now: active, withdrawn or expired.")
    field: str | None = None
    dimension: str | None = None
    purpose: str
    partner: str | None = None
    partner_category: str | None = None


class MatrixField(BaseModel):
    key: str
    dimension: str
    label: str
    description: str
    collection_purpose: str
    used_for: list[str]
    storage_location: str
    sharing_scope: str
    retention_days: int
    sensitivity: str
    points_value: int = Field(description="Points you would earn by authorizing this field.")
    i18n: dict[str, Any]


class MatrixCell(BaseModel):
    field: str
    purpose: str
    partner: str
    permitted: bool
    grant_ids: list[int]


class MatrixPurpose(BaseModel):
    key: str
    label: str
    description: str
    dpv_term: str
    lawful_basis: str = Field(description="W3C DPV legal basis of the processing, e.g. dpv:Consent.")
    i18n: dict[str, dict[str, str]] = Field(default_factory=dict)  # {"zh-CN": {"label": ...}}


class MatrixRead(BaseModel):
    at: datetime
    fields: list[MatrixField]
    purposes: list[MatrixPurpose]
    partners: list[dict[str, Any]]
    grants: list[GrantRead]
    cells: list[MatrixCell]


class StatsPoint(BaseModel):
    at: datetime
    field: str
    purpose: str
    partner: str
    permitted: int
    subjects: int
    rate: float


class StatsRead(BaseModel):
    since: datetime
    until: datetime
    step_seconds: int
    series: list[StatsPoint]


class OfferRead(BaseModel):
    """A partner x purpose a customer may be asked to share fields for: a proposed or approved contract."""

    partner: str
    partner_name: str
    partner_category: str
    partner_description: str
    partner_i18n: dict[str, Any] = Field(description='The name and description by language: {"zh-CN": {...}}.')
    purpose: str
    fields: list[str] = Field(description="The catalog fields the partner's contracts for this purpose read.")
    titles: list[str] = Field(description="The contracts' titles, as the partner named them.")
    approved: bool = Field(description="False while every contract behind this offer is still only proposed.")
    valid_until: datetime
