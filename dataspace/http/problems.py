"""RFC 7807 problem+json responses for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dataspace.errors import DataspaceError, StepUpRequired
from dataspace.http import openapi

log = logging.getLogger("dataspace.http")
PROBLEM = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://dataspace.example/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
        rid = getattr(request.state, "request_id", None)
        if rid:
            body["request_id"] = rid
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    openapi.install(app)

    @app.exception_handler(DataspaceError)
    async def _domain(request: Request, exc: DataspaceError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="dataspace"'} if exc.status == 401 else None
        if isinstance(exc, StepUpRequired):  # RFC 9470 §3: tell the client how recent a sign-in it needs
            headers = {
                "WWW-Authenticate": f'Bearer realm="dataspace", error="insufficient_user_authentication", '
                f'error_description="A more recent sign-in is required", max_age={exc.max_age}'
            }
        return problem(exc.status, exc.title, exc.detail, code=exc.code, request=request, headers=headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        return problem(
            422,
            "Invalid input",
            f"{'.'.join(first['loc'])}: {first['msg']}",
            code="invalid_input",
            request=request,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 403: "Forbidden"}
        return problem(
            exc.status_code,
            titles.get(exc.status_code, "Request failed"),
            str(exc.detail),
            code="http_error",
            request=request,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DataError)
    async def _unstorable_value(request: Request, exc: DataError) -> JSONResponse:
        # A value passed validation but does not fit its column (a number out of range, a string too long
        # for PostgreSQL): the request's fault, and nothing was written (the unit of work rolled back).
        log.warning("value does not fit its column", extra={"path": request.url.path, "error": type(exc.orig).__name__})
        return problem(
            422, "Invalid input", "A value is out of range or too long to store.", code="invalid_input", request=request
        )

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # The database is unreachable (restart, failover, network): a clean, retryable 503. Handled here
        # rather than by the catch-all below, whose re-raise makes uvicorn drop the keep-alive connection
        # (the client's next request on it would fail with a transport error instead of an answer).
        log.warning("database unavailable", extra={"path": request.url.path, "error": type(exc.orig).__name__})
        return problem(
            503,
            "Service unavailable",
            "The database is unavailable; retry shortly.",
            code="unavailable",
            request=request,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(
            500,
            "Internal error",
            "An unexpected error occurred; it has been logged.",
            code="internal_error",
            request=request,
        )
