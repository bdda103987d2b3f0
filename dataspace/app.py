"""The FastAPI application factory: wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dataspace import __version__
from dataspace.background import Background
from dataspace.compliance.controller import controller_of
from dataspace.context import Context
from dataspace.http import problems
from dataspace.http.middleware import RequestContext
from dataspace.http.routes import ROUTERS


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

    app.add_middleware(RequestContext)
    # Refuse to start without the controller's real identity: every receipt names it.
    controller_of(context.settings)

    for router in ROUTERS:
        app.include_router(router)
    return app
