"""The FastAPI application factory: wiring only."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from dataspace import __version__
from dataspace.background import Background
from dataspace.context import Context
from dataspace.http import problems
from dataspace.http.routes import ROUTERS

log = logging.getLogger("dataspace.http")


def create_app(context: Context, *, background: bool = False) -> FastAPI:
    """The app. ``background=True`` (the server process) also runs the periodic tasks of
    ``dataspace.background``; tests drive those directly instead."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner = Background(context) if background else None
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()

    app = FastAPI(
        title="Dataspace",
        version=__version__,
        description="A privacy-preserving trusted data space server.",
        lifespan=lifespan,
    )
    app.state.context = context
    problems.install(app)

    @app.middleware("http")
    async def _request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        if len(rid) > 64 or not rid.replace("-", "").isalnum():
            rid = uuid.uuid4().hex
        request.state.request_id = rid
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        response.headers.setdefault("x-content-type-options", "nosniff")
        response.headers.setdefault("referrer-policy", "no-referrer")
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.url.path,
                "status": response.status_code,
                "request_id": rid,
                "ms": round((time.perf_counter() - start) * 1000, 2),
            },
        )
        return response

    for router in ROUTERS:
        app.include_router(router)
    return app
