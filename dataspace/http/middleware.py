"""Per-request plumbing as plain ASGI middleware: the request id, two security headers, one log line, and the
request metrics (per route template, so a caller cannot add series by inventing paths).

Plain ASGI rather than ``@app.middleware("http")`` (Starlette's ``BaseHTTPMiddleware``): that one runs the app
in a task group with memory streams and costs a noticeable share of a small request's CPU.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dataspace.observability import metrics

log = logging.getLogger("dataspace.http")

_REQUEST_ID = b"x-request-id"


def _request_id(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` if it is a sane token (at most 64 letters, digits and dashes), else new."""
    for name, value in scope.get("headers", ()):
        if name == _REQUEST_ID:
            rid: str = value.decode("latin-1")
            if len(rid) <= 64 and rid.replace("-", "").isalnum():
                return rid
            break
    return uuid.uuid4().hex


class RequestContext:
    """Gives every HTTP request an id (``request.state.request_id``, echoed as ``X-Request-Id``), adds
    ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` unless the route set them, and
    logs method, path, status and duration at INFO (ids and timings only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = rid
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "no-referrer")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe_request(template, scope["method"], status or 500, time.perf_counter() - start)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "request_id": rid,
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                },
            )
