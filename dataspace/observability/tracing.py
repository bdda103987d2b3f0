"""OpenTelemetry traces: off unless ``DATASPACE_OTLP_ENDPOINT`` is set (or a test hands in an exporter).

When on, every request gets a server span (the FastAPI instrumentation), every SQL statement a span (the
SQLAlchemy instrumentation: statement text with placeholders, never bound values), and a group-commit batch
joins the traces of the requests it carries:

- each write in the batch runs in a ``group-commit write`` span whose parent is the request that submitted
  it, so a request's trace shows its own statements even though another thread ran them;
- the batch itself (BEGIN, the shared statements, COMMIT) is a ``group-commit batch`` span, a child of the
  batch's first request and linked to every request it carries, so each trace leads to the shared COMMIT.

When off, the only cost on the hot path is reading one module global (``current()`` returns None and the
span helpers are null contexts). Spans are exported in batches by a background thread (OTLP over HTTP);
an unreachable collector drops spans, it never blocks a request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from dataspace.db import Database
    from dataspace.settings import Settings

# The tracer of the configured provider; None while tracing is off (the common case: checked per write).
_tracer: Tracer | None = None

# Probes polled every few seconds by load balancers would drown the traces.
_EXCLUDED_URLS = "livez,readyz,healthz"


@dataclass
class Tracing:
    """Tracing switched on for one app and its database; ``close()`` flushes and switches it off again."""

    provider: TracerProvider
    app: Any = None  # the FastAPI app (typed loosely: fastapi belongs to dataspace.http)
    _engine_tracers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        global _tracer  # noqa: PLW0603 - the one switch the hot path reads
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        _tracer = None
        if self._engine_tracers:
            EngineTracer.remove_all_event_listeners()  # type: ignore[no-untyped-call]
            self._engine_tracers.clear()
        if self.app is not None:
            FastAPIInstrumentor.uninstrument_app(self.app)
            self.app = None
        self.provider.shutdown()


def enabled(settings: Settings) -> bool:
    return bool(settings.otlp_endpoint)


def configure(
    settings: Settings, *, app: Any, db: Database | None, exporter: SpanExporter | None = None
) -> Tracing | None:
    """Switch tracing on for ``app`` and ``db`` when an OTLP endpoint is configured or ``exporter`` is given
    (tests: the in-memory exporter, spans handed over synchronously). None when tracing stays off."""
    global _tracer  # noqa: PLW0603 - the one switch the hot path reads
    if exporter is None and not settings.otlp_endpoint:
        return None
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from dataspace import __version__

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otlp_service_name, "service.version": __version__})
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    tracing = Tracing(provider)
    if app is not None:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=_EXCLUDED_URLS)
        tracing.app = app
    if db is not None:
        tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__)
        usage = get_meter("dataspace").create_up_down_counter("db.client.connections.usage")
        tracing._engine_tracers.append(EngineTracer(tracer, db.engine, usage))  # type: ignore[no-untyped-call]
    _tracer = provider.get_tracer("dataspace", __version__)
    return tracing


# --- carrying a request's trace into the group-commit thread -----------------------------------------------
def current() -> Any:
    """The caller's trace context to hand to another thread, or None when tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def batch_span(name: str, parents: Sequence[Any]) -> Iterator[None]:
    """The span of one group-commit batch: child of the first carried request, linked to all of them."""
    tracer = _tracer
    carried = [p for p in parents if p is not None]
    if tracer is None or not carried:
        yield
        return
    from opentelemetry import trace

    links = []
    for ctx in carried:
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(trace.Link(span_context))
    with tracer.start_as_current_span(
        "group-commit batch", context=carried[0], links=links, attributes={"committer": name, "writes": len(parents)}
    ):
        yield


@contextlib.contextmanager
def write_span(parent: Any) -> Iterator[None]:
    """The span of one write inside a batch, in the trace of the request that submitted it."""
    tracer = _tracer
    if tracer is None or parent is None:
        yield
        return
    with tracer.start_as_current_span("group-commit write", context=parent):
        yield
