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
from dataspace.observability import tracing
from dataspace.realtime import DecisionService


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
            app.state.decisions.close()  # the warm sandboxes of real-time decisions
            if app.state.tracing is not None:
                app.state.tracing.close()  # flushes the spans still queued for the collector

    app = FastAPI(
        title="Dataspace",
        version=__version__,
        description="A privacy-preserving trusted data space server.",
        lifespan=lifespan,
    )
    app.state.context = context
    app.state.decisions = DecisionService(context.settings)
    # Refuse to start without the controller's real identity: every receipt names it.
    controller_of(context.settings)
    problems.install(app)

    app.add_middleware(RequestContext)

    for router in ROUTERS:
        app.include_router(router)
    # Traces only when DATASPACE_OTLP_ENDPOINT is set; the server span wraps everything above.
    app.state.tracing = tracing.configure(context.settings, app=app, db=context.db)
    return app
