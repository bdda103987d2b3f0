"""Liveness and readiness for load balancers and orchestrators: public, and they reveal nothing but which
dependency fails (see ``dataspace.observability.health`` for what each one checks and why they differ)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dataspace import __version__
from dataspace.context import Context
from dataspace.http.deps import get_context
from dataspace.http.problems import problem
from dataspace.observability.health import readiness

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process answers (no dependency is asked: restarting it would not fix a database outage)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request, ctx: Context = Depends(get_context)) -> dict[str, Any] | JSONResponse:
    """Every dependency a request needs answers; 503 problem+json naming the ones that do not."""
    checks = await run_in_threadpool(readiness, ctx.settings, ctx.db, ctx.keys)
    body = {c.name: "ok" if c.ok else "failed" for c in checks}
    failed = [c.name for c in checks if not c.ok]
    if failed:
        return problem(
            503,
            "Not ready",
            f"unavailable: {', '.join(failed)}",
            code="not_ready",
            request=request,
            headers={"retry-after": "5", "cache-control": "no-store"},
            checks=body,
        )
    return {"status": "ok", "checks": body}


@router.get("/healthz")
def health(ctx: Context = Depends(get_context)) -> dict[str, str]:
    """The older single check (the database answers); kept for existing monitors."""
    with ctx.db.session() as session:
        session.execute(text("select 1"))
    return {"status": "ok", "version": __version__}
