"""Liveness/readiness: public, reveals nothing but whether the database answers."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import text

from dataspace import __version__
from dataspace.context import Context
from dataspace.http.deps import get_context

router = APIRouter(tags=["health"])


@router.get("/healthz")
def health(ctx: Context = Depends(get_context)) -> dict[str, str]:
    with ctx.db.session() as session:
        session.execute(text("select 1"))
    return {"status": "ok", "version": __version__}
