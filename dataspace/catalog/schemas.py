"""Catalog input/output shapes (validated with pydantic; shared by the loader, the CLI and the API)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dataspace.catalog.promise import LANGUAGES
from policies.transforms import MAX_VALUES_CEILING, TRANSFORMS, Coarseness, promise_problems

KEY = r"^[a-z][a-z0-9_]{0,63}$"
# The legal bases of GDPR art. 6(1) / PIPL art. 13, as W3C DPV terms.
LawfulBasis = Literal[
    "dpv:Consent",
    "dpv:Contract",
    "dpv:LegalObligation",
    "dpv:VitalInterest",
    "dpv:PublicTask",
    "dpv:LegitimateInterest",
]
PARTNER_TEXTS = ("name", "description")  # what a partner's i18n may translate
DataType = Literal["integer", "number", "string", "category", "boolean", "date"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DimensionIn(Strict):
    key: str = Field(pattern=KEY)
    label: str = Field(min_length=1, max_length=200)
    description: str = ""
    position: int = Field(default=0, ge=0, le=10_000, strict=True)
    i18n: dict[str, dict[str, str]] = Field(default_factory=dict)


class PurposeIn(Strict):
    key: str = Field(pattern=KEY)
    label: str = Field(min_length=1, max_length=200)
    description: str = ""
    dpv_term: str = Field(
        pattern=r"^dpv:[A-Za-z]+$", max_length=200, description="W3C DPV purpose term, e.g. dpv:Marketing"
    )
    lawful_basis: LawfulBasis = Field(default="dpv:Consent", description="W3C DPV legal basis of the processing.")
    parent: str | None = None
    i18n: dict[str, dict[str, str]] = Field(default_factory=dict)


class Constraints(Strict):
    min: float | None = Field(default=None, strict=True)
    max: float | None = Field(default=None, strict=True)
    enum: list[str] | None = None
    max_length: int | None = Field(default=None, gt=0, le=1_000_000, strict=True)
    pattern: str | None = None
    required: bool = Field(default=False, strict=True)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:  # not a ValueError: pydantic would let it escape as a server error
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _range(self) -> Constraints:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        if self.enum is not None and not self.enum:
            raise ValueError("enum must list at least one value")
        return self


class TransformLimits(Strict):
    """The minimum coarseness a field promises for one transform (see ``policies.transforms``)."""

    max_values: int | None = Field(default=None, ge=2, le=MAX_VALUES_CEILING)
    min_width: float | None = Field(default=None, gt=0, allow_inf_nan=False, strict=True)
    min_step: float | None = Field(default=None, gt=0, allow_inf_nan=False, strict=True)
    min_members: int | None = Field(default=None, ge=1, le=10_000, strict=True)

    def coarseness(self) -> Coarseness:
        return Coarseness(**self.model_dump())


def _transform_mapping(v: Any) -> Any:
    """A bare list of names (``[identity]``) reads as those transforms with no limits declared."""
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return {name: {} for name in v}
    return v


def transforms_json(transforms: dict[str, TransformLimits]) -> dict[str, dict[str, Any]]:
    """The stored form of a field's transforms: ``{name: {limit: value}}``, unset limits left out."""
    return {name: limits.coarseness().as_json() for name, limits in transforms.items()}


class FieldIn(Strict):
    key: str = Field(pattern=KEY)
    dimension: str = Field(pattern=KEY)
    label: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1)
    collection_purpose: str = Field(min_length=1)
    used_for: list[str] = Field(default_factory=list)
    storage_location: str = Field(min_length=1, max_length=200)
    sharing_scope: str = Field(min_length=1)
    retention_days: int = Field(gt=0, le=36500, strict=True)
    sensitivity: Literal["normal", "sensitive"] = "normal"
    points_value: int = Field(default=0, ge=0, le=1_000_000, strict=True)
    data_type: DataType
    constraints: Constraints = Field(default_factory=Constraints)
    # The transforms the field may leave under, each with its minimum coarseness (the catalog's promise).
    transforms: dict[str, TransformLimits] = Field(default_factory=dict)
    i18n: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("transforms", mode="before")
    @classmethod
    def _transform_list(cls, v: Any) -> Any:
        return _transform_mapping(v)

    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, v: dict[str, TransformLimits]) -> dict[str, TransformLimits]:
        unknown = sorted(set(v) - set(TRANSFORMS))
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; allowed: {list(TRANSFORMS)}")
        return v

    @model_validator(mode="after")
    def _type_constraints(self) -> FieldIn:
        c = self.constraints
        if self.data_type == "category" and not c.enum:
            raise ValueError("a category field needs constraints.enum")
        if self.data_type not in ("integer", "number") and (c.min is not None or c.max is not None):
            raise ValueError(f"min/max do not apply to {self.data_type} fields")
        problems = promise_problems(
            {name: limits.coarseness() for name, limits in self.transforms.items()},
            data_type=self.data_type,
            sensitive=self.sensitivity == "sensitive",
        )
        if problems:
            raise ValueError(f"transforms: {'; '.join(problems)}")
        return self


class FieldUpdate(Strict):
    """Fields a steward may change; the key and data type are fixed once created."""

    label: str | None = None
    description: str | None = None
    collection_purpose: str | None = None
    used_for: list[str] | None = None
    storage_location: str | None = None
    sharing_scope: str | None = None
    retention_days: int | None = Field(default=None, gt=0, le=36500, strict=True)
    sensitivity: Literal["normal", "sensitive"] | None = None
    points_value: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)
    constraints: Constraints | None = None
    transforms: dict[str, TransformLimits] | None = None
    i18n: dict[str, dict[str, str]] | None = None

    @field_validator("transforms", mode="before")
    @classmethod
    def _transform_list(cls, v: Any) -> Any:
        return _transform_mapping(v)

    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, v: dict[str, TransformLimits] | None) -> dict[str, TransformLimits] | None:
        if v is not None:
            unknown = sorted(set(v) - set(TRANSFORMS))
            if unknown:
                raise ValueError(f"unknown transform(s) {unknown}")
        return v


class PartnerIn(Strict):
    key: str = Field(pattern=KEY)
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(pattern=KEY)
    description: str = ""
    # The name and description in other languages; left out on an update, the stored translations stay.
    i18n: dict[str, dict[str, str]] | None = None

    @field_validator("i18n")
    @classmethod
    def _known_texts(cls, v: dict[str, dict[str, str]] | None) -> dict[str, dict[str, str]] | None:
        if v is None:
            return v
        langs = sorted(set(v) - set(LANGUAGES[1:]))
        if langs:
            raise ValueError(f"unknown language(s) {langs}; allowed: {list(LANGUAGES[1:])}")
        for lang, texts in v.items():
            names = sorted(set(texts) - set(PARTNER_TEXTS))
            if names:
                raise ValueError(f"{lang}: unknown text(s) {names}; allowed: {list(PARTNER_TEXTS)}")
            if len(texts.get("name", "")) > 200:
                raise ValueError(f"{lang}: name is longer than 200 characters")
        return v


class CatalogDocument(Strict):
    """A catalog file (YAML or JSON): dimensions, purposes, fields, and optionally partners."""

    dimensions: list[DimensionIn] = Field(default_factory=list)
    purposes: list[PurposeIn] = Field(default_factory=list)
    fields: list[FieldIn] = Field(default_factory=list)
    partners: list[PartnerIn] = Field(default_factory=list)


class FieldRead(BaseModel):
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
    points_value: int
    data_type: str
    constraints: dict[str, Any]
    transforms: dict[str, dict[str, Any]]
    # The promise above in plain words, by language (generated from ``transforms``, never typed by hand).
    shared_as: dict[str, str]
    i18n: dict[str, Any]
    status: str
    version: int
