"""Feature specs of a data contract: a catalog field plus the transform that desensitizes it.

Specs are plain frozen dataclasses parsed from the contract's JSON, e.g.
``{"field": "age", "transform": "bin", "edges": [18, 25, 35, 50, 65]}``. ``parse_feature`` checks the shape;
``check_against_catalog`` checks that the catalog allows the transform for that field and that the feature
is no finer than the field's promise (``policies.transforms.Coarseness``): no more distinct values than
``max_values``, no narrower bins than ``min_width``, no smaller topcode step than ``min_step``, no group
standing for fewer source values than ``min_members``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dataspace.errors import InvalidInput
from policies.transforms import CATEGORICAL_TYPES, NUMERIC_TYPES, Coarseness

PSEUDONYM_COLUMN = "pseudonym"
MAX_QUANTILES = 100
MAX_BIN_EDGES = 1000


@dataclass(frozen=True)
class Bin:
    """Generalize a number into intervals; emits the interval index (0 = below the first edge)."""

    field: str
    edges: tuple[float, ...]
    name: str | None = None
    transform = "bin"

    def labels(self) -> list[str]:
        e = [_fmt(x) for x in self.edges]
        return [f"<{e[0]}"] + [f"[{a},{b})" for a, b in itertools.pairwise(e)] + [f">={e[-1]}"]


@dataclass(frozen=True)
class Quantile:
    """Generalize a number into ``q`` quantile bins over the eligible population; emits the bin index."""

    field: str
    q: int
    name: str | None = None
    transform = "quantile"


@dataclass(frozen=True)
class TopCode:
    """Clamp a number into ``[lower, upper]``; ``step`` optionally rounds down to a multiple of itself."""

    field: str
    upper: float | None
    lower: float | None = None
    step: float | None = None
    name: str | None = None
    transform = "topcode"


@dataclass(frozen=True)
class Group:
    """Map categories to coarser groups; values in no group become ``other`` (null when ``other`` is None)."""

    field: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    other: str | None = "other"
    name: str | None = None
    transform = "group"

    def mapping(self) -> dict[str, str]:
        return {member: label for label, members in self.groups for member in members}

    def labels(self) -> list[str]:
        out = [label for label, _ in self.groups]
        if self.other is not None and self.other not in out:
            out.append(self.other)
        return out


@dataclass(frozen=True)
class Identity:
    """Emit the value as is; only for fields whose catalog entry allows ``identity``."""

    field: str
    name: str | None = None
    transform = "identity"


FeatureSpec = Bin | Quantile | TopCode | Group | Identity
TRANSFORMS = ("bin", "quantile", "topcode", "group", "identity")


def column_name(spec: FeatureSpec) -> str:
    return spec.name or spec.field


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _number(raw: Mapping[str, Any], key: str, *, required: bool) -> float | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"feature {raw.get('field')!r}: {key!r} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"feature {raw.get('field')!r}: {key!r} must be a finite number")
    return float(value)


def parse_feature(raw: Mapping[str, Any]) -> FeatureSpec:
    """Parse one feature of a contract from its JSON form; ``InvalidInput`` on any malformed part."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("a feature must be an object")
    field = raw.get("field")
    if not isinstance(field, str) or not field:
        raise InvalidInput("a feature needs a 'field' (catalog field key)")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInput(f"feature {field!r}: 'name' must be a non-empty string")
    transform = raw.get("transform")
    if transform == "bin":
        edges = raw.get("edges")
        if not isinstance(edges, list) or not 1 <= len(edges) <= MAX_BIN_EDGES:
            raise InvalidInput(f"feature {field!r}: 'edges' must be a non-empty list of numbers")
        values = [_number({"field": field, "edge": e}, "edge", required=True) for e in edges]
        floats = tuple(v for v in values if v is not None)
        if any(b <= a for a, b in itertools.pairwise(floats)):
            raise InvalidInput(f"feature {field!r}: 'edges' must be strictly increasing")
        return Bin(field=field, edges=floats, name=name)
    if transform == "quantile":
        q = raw.get("q")
        if isinstance(q, bool) or not isinstance(q, int) or not 2 <= q <= MAX_QUANTILES:
            raise InvalidInput(f"feature {field!r}: 'q' must be an integer between 2 and {MAX_QUANTILES}")
        return Quantile(field=field, q=q, name=name)
    if transform == "topcode":
        upper = _number(raw, "upper", required=False)
        lower = _number(raw, "lower", required=False)
        step = _number(raw, "step", required=False)
        if upper is None and lower is None:
            raise InvalidInput(f"feature {field!r}: topcode needs 'upper' and/or 'lower'")
        if upper is not None and lower is not None and lower >= upper:
            raise InvalidInput(f"feature {field!r}: 'lower' must be below 'upper'")
        if step is not None and step <= 0:
            raise InvalidInput(f"feature {field!r}: 'step' must be positive")
        return TopCode(field=field, upper=upper, lower=lower, step=step, name=name)
    if transform == "group":
        return _parse_group(field, raw, name)
    if transform == "identity":
        return Identity(field=field, name=name)
    raise InvalidInput(f"feature {field!r}: unknown transform {transform!r}; expected one of {TRANSFORMS}")


def _parse_group(field: str, raw: Mapping[str, Any], name: str | None) -> Group:
    groups = raw.get("groups")
    if not isinstance(groups, Mapping) or not groups:
        raise InvalidInput(f"feature {field!r}: 'groups' must map a label to a list of values")
    seen: set[str] = set()
    parsed: list[tuple[str, tuple[str, ...]]] = []
    for label, members in groups.items():
        if not isinstance(members, list) or not all(isinstance(m, str | bool | int) for m in members):
            raise InvalidInput(f"feature {field!r}: group {label!r} must be a list of values")
        names = tuple(_category(m) for m in members)
        if seen.intersection(names):
            raise InvalidInput(f"feature {field!r}: a value belongs to more than one group")
        seen.update(names)
        parsed.append((str(label), names))
    other = raw.get("other", "other")
    if other is not None and not isinstance(other, str):
        raise InvalidInput(f"feature {field!r}: 'other' must be a string or null")
    return Group(field=field, groups=tuple(parsed), other=other, name=name)


def _category(value: Any) -> str:
    """The string form a categorical value is compared in (booleans as JSON spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_features(raw: Iterable[Mapping[str, Any]]) -> list[FeatureSpec]:
    specs = [parse_feature(r) for r in raw]
    if not specs:
        raise InvalidInput("a contract needs at least one feature")
    names = [column_name(s) for s in specs]
    if PSEUDONYM_COLUMN in names:
        raise InvalidInput(f"{PSEUDONYM_COLUMN!r} is reserved for the pseudonym column")
    if len(set(names)) != len(names):
        raise InvalidInput("feature column names must be unique (set 'name' to emit a field twice)")
    return specs


@dataclass(frozen=True)
class CatalogField:
    """What emission needs to know about a catalog field (decoupled from the ORM row).

    ``transforms`` maps each transform the field may leave under to its promised coarseness; a plain
    sequence of names declares no limits (so only ``identity`` of it can pass).
    """

    key: str
    data_type: str
    transforms: Mapping[str, Coarseness]
    status: str = "active"
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.transforms, Mapping):
            object.__setattr__(self, "transforms", {name: Coarseness() for name in self.transforms})


def feature_fields(specs: Sequence[FeatureSpec]) -> list[str]:
    """The catalog fields features read (each once, in feature order)."""
    return list(dict.fromkeys(s.field for s in specs))


def check_against_catalog(specs: Sequence[FeatureSpec], fields: Mapping[str, CatalogField]) -> None:
    """Refuse a transform the catalog does not allow for a field, one that does not fit its type, or one
    finer than the field's promise (``InvalidInput`` with an ``errors`` list naming field, transform, limit)."""
    violations: list[dict[str, Any]] = []
    for spec in specs:
        field = fields.get(spec.field)
        if field is None:
            raise InvalidInput(f"feature {spec.field!r}: no such catalog field")
        if field.status != "active":
            raise InvalidInput(f"feature {spec.field!r}: the catalog field is retired")
        if spec.transform not in field.transforms:
            raise InvalidInput(
                f"feature {spec.field!r}: transform {spec.transform!r} is not allowed by the catalog "
                f"(allowed: {', '.join(field.transforms) or 'none'})"
            )
        numeric = field.data_type in NUMERIC_TYPES
        if isinstance(spec, Bin | Quantile | TopCode) and not numeric:
            raise InvalidInput(f"feature {spec.field!r}: {spec.transform} needs a numeric field")
        if isinstance(spec, Group) and field.data_type not in CATEGORICAL_TYPES:
            raise InvalidInput(f"feature {spec.field!r}: group needs a categorical field")
        violations += coarseness_violations(spec, field)
    if violations:
        first = violations[0]
        why = (
            f"the catalog declares no {first['limit']} for it"
            if first["allowed"] is None
            else f"{first['limit']} {first['allowed']:g}, asked for {first['requested']}"
        )
        raise InvalidInput(
            f"feature {first['feature']!r}: {first['transform']} of field {first['field']!r} is finer than the "
            f"catalog promises ({why})",
            extra={"errors": violations},
        )


def output_values(spec: FeatureSpec, field: CatalogField) -> int | None:
    """The most distinct (non-null) values this feature can emit for this field; None when unbounded."""
    if isinstance(spec, Bin):
        return len(spec.edges) + 1
    if isinstance(spec, Quantile):
        return spec.q
    if isinstance(spec, Group):
        return len(spec.labels())
    if isinstance(spec, TopCode):
        return _topcode_values(spec, field)
    if field.data_type == "boolean":
        return 2
    if field.enum is not None:
        return len(field.enum)
    if field.data_type == "integer" and field.minimum is not None and field.maximum is not None:
        return math.floor(field.maximum) - math.ceil(field.minimum) + 1
    return None


def promised_values(spec: FeatureSpec, field: CatalogField) -> int | None:
    """The most distinct values the field's promise lets this feature send (None: no bound declared)."""
    limits = field.transforms.get(spec.transform)
    return None if limits is None else limits.max_values


def _topcode_values(spec: TopCode, field: CatalogField) -> int | None:
    lo = spec.lower if spec.lower is not None else field.minimum
    hi = spec.upper if spec.upper is not None else field.maximum
    if lo is None or hi is None:
        return None
    if hi <= lo:
        return 1
    if spec.step is not None:
        # The same arithmetic as ``transforms.top_code``: values are floor((x - base) / step) * step + base.
        base = 0.0 if spec.lower is None else spec.lower
        return math.floor((hi - base) / spec.step) - math.floor((lo - base) / spec.step) + 1
    if field.data_type != "integer":
        return None
    return math.floor(hi) - math.ceil(lo) + 1 + (not float(lo).is_integer()) + (not float(hi).is_integer())


def _group_members(spec: Group, field: CatalogField) -> dict[str, int] | None:
    """How many of the field's possible values each emitted group label stands for (None: unknown domain)."""
    domain = set(field.enum) if field.enum is not None else None
    if domain is None and field.data_type == "boolean":
        domain = {"true", "false"}
    members: dict[str, set[str]] = {}
    for label, values in spec.groups:
        members.setdefault(label, set()).update(v for v in values if domain is None or v in domain)
    if spec.other is not None:
        if domain is None:
            members.pop(spec.other, None)  # "everything else" of an open domain: never a small group
        else:
            listed = {v for _, values in spec.groups for v in values}
            members.setdefault(spec.other, set()).update(domain - listed)
    return {label: len(values) for label, values in members.items()}


def coarseness_violations(spec: FeatureSpec, field: CatalogField) -> list[dict[str, Any]]:
    """Each way ``spec`` is finer than the field's promise for its transform (empty: within the promise)."""
    limits = field.transforms.get(spec.transform, Coarseness())
    out: list[dict[str, Any]] = []

    def violation(limit: str, allowed: float | None, requested: float | str) -> None:
        out.append(
            {
                "field": spec.field,
                "feature": column_name(spec),
                "transform": spec.transform,
                "limit": limit,
                "allowed": allowed,
                "requested": requested,
            }
        )

    values = output_values(spec, field)
    if spec.transform != "identity" and limits.max_values is None:
        violation("max_values", None, "unbounded" if values is None else values)  # fail closed
    elif limits.max_values is not None and (values is None or values > limits.max_values):
        violation("max_values", limits.max_values, "unbounded" if values is None else values)
    if isinstance(spec, Bin) and limits.min_width is not None and len(spec.edges) > 1:
        narrowest = min(b - a for a, b in itertools.pairwise(spec.edges))
        if narrowest < limits.min_width:
            violation("min_width", limits.min_width, narrowest)
    if isinstance(spec, TopCode) and limits.min_step is not None:
        step = spec.step if spec.step is not None else (1.0 if field.data_type == "integer" else None)
        if step is None or step < limits.min_step:
            violation("min_step", limits.min_step, "no step" if step is None else step)
    if isinstance(spec, Group) and limits.min_members is not None:
        smallest = min((n for n in (_group_members(spec, field) or {}).values() if n > 0), default=None)
        if smallest is not None and smallest < limits.min_members:
            violation("min_members", limits.min_members, smallest)
    return out
