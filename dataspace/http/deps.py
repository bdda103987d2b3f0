"""Request-scoped dependencies: the context, the ways a route reads and writes, the caller, and the
authorization gate.

A route writes in one of two ways:

- ``session: WriteSession``: the request's unit of work, one transaction committed when the route returns
  and before the response leaves (so an acknowledged write is durable), rolled back if it raises. What
  must happen only once the write is committed (dropping a cache, a delivery) is registered with
  ``after_commit(session, fn)``; a route whose answer needs the committed write (another transaction reads
  it) calls ``session.commit()`` and then uses the session no more.
- ``writes: GroupWrites`` and ``await writes.run(fn)``: short, frequent writes (consent changes,
  redemptions) run through the group committer, which batches concurrent requests into one COMMIT
  (``dataspace.groupcommit``); the route gets ``fn``'s result after the commit.

Reads take ``session: ReadSession`` (on SQLite it takes no write lock). A route acting for the signed-in
customer takes ``subject_id: int = Depends(current_subject(obj, act))``
(``subject_of(principal)`` when it also needs the principal); ``partner_of(principal)`` names the
calling partner.

Every route (except the public ones listed in ``PUBLIC_ROUTES``) must depend on ``authorize(obj, act)``;
the route-matrix test fails for a route that does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from dataspace.context import Context
from dataspace.errors import Forbidden
from dataspace.groupcommit import GroupCommit
from dataspace.principal import Principal


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
    for fn in session.info.pop(_AFTER_COMMIT, ()):
        fn()


_AFTER_COMMIT = "after_commit"


def after_commit(session: Session, fn: Callable[[], object]) -> None:
    """Run ``fn`` once the request's unit of work (``WriteSession``) has committed; never if it rolls back."""
    session.info.setdefault(_AFTER_COMMIT, []).append(fn)


def read_session(ctx: Context = Depends(get_context)) -> Iterator[Session]:
    with ctx.db.session() as session:
        yield session


async def get_writes(request: Request) -> GroupCommit:
    # async: a plain attribute read (see get_context).
    return context_of(request).writes


# The request's unit of work. scope="function": with the default (request) scope FastAPI would commit only
# after the response is sent, so a client could act on a response whose write is not durable.
WriteSession = Annotated[Session, Depends(unit_of_work, scope="function")]
ReadSession = Annotated[Session, Depends(read_session)]
GroupWrites = Annotated[GroupCommit, Depends(get_writes)]


def subject_of(principal: Principal) -> int:
    """The data subject a customer's token acts for; any other caller is forbidden."""
    if principal.subject_id is None:
        raise Forbidden()
    return principal.subject_id


def partner_of(principal: Principal) -> int:
    """The partner a partner's token acts for; any other caller is forbidden."""
    if principal.partner_id is None:
        raise Forbidden()
    return principal.partner_id


def current_subject(obj: str, act: str) -> Callable[..., Any]:
    """A dependency like ``authorize(obj, act)`` that answers the caller's data subject id (403 for a token
    that acts for no data subject). Use it as ``subject_id: int = Depends(current_subject(obj, act))``; a
    route that also needs the principal depends on ``authorize`` and calls ``subject_of``."""
    gate = authorize(obj, act)

    async def _dep(principal: Principal = Depends(gate)) -> int:
        return subject_of(principal)

    return _dep


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
