"""Canonical entry bytes: JSON with sorted keys, no whitespace, UTF-8 (RFC 8785 for the types we log:
strings, integers, booleans, null, arrays and objects; no floats)."""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    return _encoder.encode(value)


def canonical_bytes(value: Any) -> bytes:
    return _encoder.encode(value).encode()
