"""Request-scoped dependencies: the context, the unit of work, and the authorization gate.

Every route (except the public ones listed in ``PUBLIC_ROUTES``) must depend on ``authorize(obj, act)``;
the route-matrix test fails for a route that does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from dataspace.auth.principal import Principal
from dataspace.context import Context


def context_of(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


async def get_context(request: Request) -> Context:
    # async on purpose: a plain attribute read, which FastAPI would otherwise run on a worker thread.
    return context_of(request)


def unit_of_work(ctx: Context = Depends(get_context)) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back if it raises.

    Always use it as ``Depends(unit_of_work, scope="function")``: with the default (request) scope FastAPI
    commits only after the response is sent, so a client could act on a response whose write is not durable.
    """
    with ctx.db.transaction() as session:
        yield session


def read_session(ctx: Context = Depends(get_context)) -> Iterator[Session]:
    with ctx.db.session() as session:
        yield session


def authorize(obj: str, act: str) -> Callable[..., Any]:
    """A dependency that authenticates the bearer token and asks the policy whether ``act`` on ``obj``
    is allowed for the caller's role; returns the ``Principal``. Ownership (my data only) is enforced by
    the services, which receive the principal."""
    from dataspace.http.security import authorize_from_memory, authorize_request

    async def _dep(request: Request) -> Principal:
        # An allow answerable from memory is decided on the event loop; everything else (database, audit of a
        # denial) on a worker thread, like any blocking code. The context is read directly, not through the
        # get_context sub-dependency: FastAPI's per-dependency bookkeeping costs more than the read.
        ctx = context_of(request)
        principal = authorize_from_memory(request, ctx, obj, act)
        if principal is None:
            principal = await run_in_threadpool(authorize_request, request, ctx, obj, act)
        return principal

    _dep.__dataspace_policy__ = (obj, act)  # type: ignore[attr-defined]
    return _dep
