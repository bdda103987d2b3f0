"""Desensitization transforms a catalog field may allow (the emission code implements them), and the
minimum coarseness a field promises for each.

- ``identity``: the value as is (only for fields whose catalog entry allows raw release; never a sensitive one).
- ``bin``: generalization into fixed bins (edges).
- ``quantile``: generalization into population quantile bins.
- ``topcode``: top/bottom coding (clamp to bounds), optionally rounded down to a step.
- ``group``: category grouping (many values to few groups).

A field declares, per transform it may leave under, its ``Coarseness``: ``max_values`` (the most distinct
values one feature may take; required for every transform but ``identity``), and per transform the
smallest bin width (``min_width``), the smallest topcode step (``min_step``) or the fewest source values
behind one group (``min_members``). A contract finer than that is refused, and the emission counts the
distinct values it really produced against ``max_values``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TRANSFORMS: tuple[str, ...] = ("identity", "bin", "quantile", "topcode", "group")
DATA_TYPES: tuple[str, ...] = ("integer", "number", "string", "category", "boolean", "date")
SENSITIVITIES: tuple[str, ...] = ("normal", "sensitive")

NUMERIC_TYPES = frozenset({"integer", "number"})
CATEGORICAL_TYPES = frozenset({"string", "category", "boolean"})
# Which field types each transform applies to.
APPLIES_TO: dict[str, frozenset[str]] = {
    "identity": frozenset(DATA_TYPES),
    "bin": NUMERIC_TYPES,
    "quantile": NUMERIC_TYPES,
    "topcode": NUMERIC_TYPES,
    "group": CATEGORICAL_TYPES,
}
# The limits each transform may declare; ``max_values`` is required for all but ``identity``.
LIMITS: dict[str, tuple[str, ...]] = {
    "identity": ("max_values",),
    "bin": ("max_values", "min_width"),
    "quantile": ("max_values",),
    "topcode": ("max_values", "min_step"),
    "group": ("max_values", "min_members"),
}
MAX_VALUES_CEILING = 1000  # no promise may allow more distinct values than this (besides raw identity)


@dataclass(frozen=True)
class Coarseness:
    """The minimum coarseness of one transform of one field (unset limits do not apply)."""

    max_values: int | None = None
    min_width: float | None = None
    min_step: float | None = None
    min_members: int | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Coarseness:
        raw = raw or {}
        return cls(
            max_values=raw.get("max_values"),
            min_width=raw.get("min_width"),
            min_step=raw.get("min_step"),
            min_members=raw.get("min_members"),
        )

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def promise_problems(transforms: Mapping[str, Coarseness], *, data_type: str, sensitive: bool) -> list[str]:
    """What is wrong with a field's declared transforms and limits (empty: the promise is sound)."""
    problems = []
    for name, limits in transforms.items():
        if name not in TRANSFORMS:
            problems.append(f"unknown transform {name!r}; allowed: {list(TRANSFORMS)}")
            continue
        if data_type not in APPLIES_TO[name]:
            problems.append(f"{name} does not apply to {data_type} fields")
        if name == "identity" and sensitive:
            problems.append("a sensitive field may not be released as is (identity)")
        extra = sorted(k for k, v in limits.as_json().items() if v is not None and k not in LIMITS[name])
        if extra:
            problems.append(f"{name} takes no {', '.join(extra)} (its limits: {', '.join(LIMITS[name])})")
        if name != "identity" and limits.max_values is None:
            problems.append(f"{name} needs max_values (the most distinct values it may send)")
    return problems
