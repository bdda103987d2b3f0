"""Shared request parameter types: every integer a request carries is bounded here, at the edge.

A number past what the database stores (an int64 on every backend for log indexes, an int32 for ids) is a
422 before any query runs; unbounded, PostgreSQL answers a DataError (mapped to 422) but SQLite's driver
raises an OverflowError (a 500). The OpenAPI test asserts every integer parameter has a maximum.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request

from dataspace.db import MAX_ID
from dataspace.errors import InvalidInput

MAX_INDEX = 2**63 - 1
"""Largest log index or tree size (a BIGINT)."""

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="A database id")]
LogIndex = Annotated[int, Path(ge=0, le=MAX_INDEX, description="An index in a log")]
Version = Annotated[int, Path(ge=1, le=10_000, description="A contract version")]
SubjectFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="A subject id")]


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The raw request body, refused (422) as soon as it passes ``limit`` bytes: the declared length is
    checked first, then the bytes actually received, so a lying or absent Content-Length buys nothing."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InvalidInput(f"the {what} is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidInput(f"the {what} is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
