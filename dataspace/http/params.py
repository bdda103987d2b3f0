"""Shared request parameter types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from dataspace.db import MAX_ID

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="A database id")]
