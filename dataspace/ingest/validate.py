"""Vectorized validation of a batch of raw (string) columns against catalog fields, with pyarrow.

Every value is checked for type, range, enum, length and pattern; the result is, per row, either the typed
value of every field or a list of reasons. Nothing here touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

INT_RE = r"^[+-]?[0-9]{1,18}$"
NUM_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TRUE = ["true", "1", "yes", "y", "t"]
FALSE = ["false", "0", "no", "n", "f"]


@dataclass(frozen=True)
class FieldRule:
    key: str
    data_type: str
    constraints: dict[str, Any]


@dataclass
class ColumnResult:
    values: pa.Array  # typed values; null where missing or invalid
    invalid: np.ndarray  # bool mask of rows with an invalid (non-null) value
    reasons: dict[int, str]  # row index in batch -> reason, for invalid rows


def _as_string(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())  # typed Parquet columns are validated like text
    trimmed = pc.utf8_trim_whitespace(col)
    empty = pc.equal(trimmed, "")
    return pc.if_else(empty, pa.scalar(None, pa.string()), trimmed)


def validate_column(rule: FieldRule, raw: pa.Array | pa.ChunkedArray) -> ColumnResult:
    col = _as_string(raw)
    n = len(col)
    present = pc.is_valid(col).to_numpy(zero_copy_only=False)
    c = rule.constraints
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}

    def flag(mask: np.ndarray, reason: str) -> None:
        new = mask & ~bad & present
        for i in np.flatnonzero(new):
            reasons[int(i)] = reason
        bad[:] |= new

    values: pa.Array
    if rule.data_type in ("integer", "number"):
        pattern = INT_RE if rule.data_type == "integer" else NUM_RE
        ok = pc.fill_null(pc.match_substring_regex(col, pattern), False).to_numpy(zero_copy_only=False)
        flag(~ok, f"not {'an integer' if rule.data_type == 'integer' else 'a number'}")
        safe = pc.if_else(pa.array(ok), col, pa.scalar(None, pa.string()))
        target = pa.int64() if rule.data_type == "integer" else pa.float64()
        values = pc.cast(safe, target)
        num = values.to_numpy(zero_copy_only=False).astype("float64")
        if rule.data_type == "number":
            flag(~np.isfinite(np.nan_to_num(num, nan=0.0)), "not a finite number")
        if c.get("min") is not None:
            flag(np.nan_to_num(num, nan=np.inf) < c["min"], f"below minimum {c['min']:g}")
        if c.get("max") is not None:
            flag(np.nan_to_num(num, nan=-np.inf) > c["max"], f"above maximum {c['max']:g}")
    elif rule.data_type == "boolean":
        lower = pc.utf8_lower(col)
        is_true = pc.fill_null(pc.is_in(lower, pa.array(TRUE)), False).to_numpy(zero_copy_only=False)
        is_false = pc.fill_null(pc.is_in(lower, pa.array(FALSE)), False).to_numpy(zero_copy_only=False)
        flag(~(is_true | is_false), "not a boolean (true/false)")
        values = pa.array(np.where(is_true, True, False), mask=~(is_true | is_false))
    elif rule.data_type == "date":
        ok = pc.fill_null(pc.match_substring_regex(col, DATE_RE), False).to_numpy(zero_copy_only=False)
        safe = pc.if_else(pa.array(ok), col, pa.scalar(None, pa.string()))
        parsed = pc.strptime(safe, format="%Y-%m-%d", unit="s", error_is_null=True)
        ok &= pc.is_valid(parsed).to_numpy(zero_copy_only=False)
        flag(~ok, "not a date (YYYY-MM-DD)")
        values = pc.if_else(pa.array(ok), col, pa.scalar(None, pa.string()))
    else:  # string, category
        values = col
        if c.get("enum") is not None:
            ok = pc.fill_null(pc.is_in(col, pa.array(c["enum"], pa.string())), False).to_numpy(zero_copy_only=False)
            flag(~ok, "not one of the allowed values")
        if c.get("max_length") is not None:
            long = pc.fill_null(pc.greater(pc.utf8_length(col), c["max_length"]), False)
            flag(long.to_numpy(zero_copy_only=False), f"longer than {c['max_length']} characters")
        if c.get("pattern"):
            ok = pc.fill_null(pc.match_substring_regex(col, c["pattern"]), False).to_numpy(zero_copy_only=False)
            flag(~ok, "does not match the required pattern")
    if c.get("required"):
        missing = ~present
        for i in np.flatnonzero(missing & ~bad):
            reasons[int(i)] = "value is required"
        bad |= missing
    return ColumnResult(values=values, invalid=bad, reasons=reasons)
