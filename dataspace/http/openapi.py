"""The OpenAPI document, made to describe the server as it behaves.

FastAPI documents a route's success answer and its 422; this adds what the routes' dependencies and the
error handlers of ``dataspace.http.problems`` make them answer, derived from each route rather than written
by hand:

- the OAuth 2 security scheme (authorization code with PKCE, client credentials), its scopes read from
  ``dataspace.auth.scopes``, and on every guarded operation the one scope its ``authorize(obj, act)``
  dependency needs; public operations say they need none;
- every error status a route can answer, each an RFC 7807 ``application/problem+json`` ``Problem``:
  401 and 403 where a token is checked, 404 where the path names a row, 422 where the request carries
  input, 503 wherever the database is reached, plus any a route declares (``responses=problems.responses(
  409)``); the oauth and page routes answer in their own formats and keep what they declare.

The schemathesis test holds the server to this document for every role: an undocumented status fails it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from dataspace.auth.scopes import SCOPE_DESCRIPTIONS, STEP_UP_SCOPES, required_scope

PROBLEM = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
SCHEME = "oauth2"

# The RFC 7807 body every error response carries (``code``, ``instance``, ``request_id`` and ``errors`` are
# this API's extension members; a few errors add more, e.g. ``max_age`` on a step-up 401).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}

DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid or expired token; or the action needs a more recent sign-in (`max_age`)",
    403: "The token's role, scope or owner does not allow this",
    404: "Not found (or not yours)",
    409: "The current state does not allow this change",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests; retry after `Retry-After` seconds",
    503: "A required component (the database, the sandbox) is unavailable; retry shortly",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer challenge (RFC 6750, 9470)"}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}},
}
# Routes answering in their own formats (RFC 6749 JSON errors, HTML pages): documented as they declare.
OWN_FORMAT_PREFIXES = ("/oauth/", "/.well-known/", "/portal", "/console", "/partner/", "/static/")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Statuses a route's service answers that its signature does not show (a row named in the body, a size cap).
EXTRA_STATUSES: dict[str, tuple[int, ...]] = {
    "/v1/me/redemptions": (404,),
    "/v1/privacy-budgets": (404,),
    "/v1/audit/checkpoint": (404,),  # no signed checkpoint yet
    "/v1/audit/export": (404,),
    "/v1/audit/proofs/inclusion": (404,),
    "/v1/audit/proofs/consistency": (404,),
    "/v1/me/usage/checkpoint": (404,),  # the usage log is empty
    "/v1/me/usage/consistency": (404,),  # the log has not reached that size
    "/v1/partner/models": (404, 413, 415),
    "/v1/partner/jobs": (404,),
    "/v1/partner/contracts": (404,),
    "/v1/partner/linkage": (404,),  # the contract named in the body
    "/v1/partner/linkage/declarations": (404,),
    "/v1/ingest": (413,),
    "/v1/ingest/csv": (413, 415, 422),
}
# The OAuth protocol endpoints answer errors in RFC 6749's format (JSON ``error``), the sign-in page in HTML.
OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_OAUTH_JSON = {"application/json": {"schema": OAUTH_ERROR_SCHEMA}}
OAUTH_STATUSES: dict[tuple[str, str], dict[int, tuple[str, dict[str, Any] | None]]] = {
    ("POST", "/oauth/token"): {400: ("Invalid request or grant (RFC 6749 5.2)", _OAUTH_JSON),
                               401: ("Client authentication failed", _OAUTH_JSON)},
    ("POST", "/oauth/revoke"): {400: ("Invalid request (RFC 7009)", _OAUTH_JSON),
                                401: ("Client authentication failed", _OAUTH_JSON)},
    ("POST", "/oauth/introspect"): {400: ("Invalid request (RFC 7662)", _OAUTH_JSON),
                                    401: ("Client authentication failed", _OAUTH_JSON)},
    ("GET", "/oauth/authorize"): {302: ("Back to the client with an error (RFC 6749 4.1.2.1)", None),
                                  400: ("Invalid client or redirect URI: shown, not redirected", _HTML)},
    ("POST", "/oauth/authorize"): {302: ("Back to the client with a code or an error", None),
                                   400: ("Invalid client or redirect URI", _HTML),
                                   401: ("Wrong user name or password (the page again)", _HTML),
                                   403: ("Expired form, or an account of another role", _HTML),
                                   429: ("Too many failed sign-ins from here: throttled", _HTML)},
}  # fmt: skip
_NO_DATABASE = frozenset({"/healthz", "/livez", "/v1/keys/receipts", "/v1/events/schemas"})


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description or DESCRIPTIONS.get(status, "Request failed"),
        "content": {PROBLEM: {"schema": PROBLEM_REF}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """For a route decorator's ``responses=``: the extra error statuses this route answers (as problems)."""
    return {status: problem_response(status) for status in statuses}


def api_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every API route of the app with its effective path and dependencies (FastAPI >= 0.160 keeps included
    routers as branches: they are flattened here)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from api_routes(route.effective_candidates())
        elif isinstance(getattr(route, "original_route", route), APIRoute) and route.dependant is not None:
            yield route


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def route_policy(route: Any) -> tuple[str, str] | None:
    """The (object, action) the route's ``authorize`` dependency checks, None for a public route."""
    for dep in _dependencies(route.dependant):
        policy = getattr(dep.call, "__dataspace_policy__", None)
        if policy is not None:
            return (str(policy[0]), str(policy[1]))
    return None


def _has_input(route: Any) -> bool:
    d = route.dependant
    found = [d.path_params, d.query_params, d.header_params, d.cookie_params, d.body_params]
    found += [[1] for sub in _dependencies(d) for p in (sub.query_params, sub.body_params, sub.path_params) if p]
    return any(found)


def error_statuses(route: Any) -> set[int]:
    """The error statuses a route answers, derived from its dependencies and parameters."""
    statuses: set[int] = set()
    if route_policy(route) is not None:
        statuses |= {401, 403}
    if route.dependant.path_params:
        statuses.add(404)
    if _has_input(route):
        statuses.add(422)
    if route.dependant.body_params:
        statuses.add(400)  # a body that cannot be parsed at all (not JSON, wrong encoding)
    if route.methods & WRITES and route_policy(route) is not None:
        statuses.add(409)  # a change the current state does not allow (duplicate, retired, stale, too few points)
    statuses |= set(EXTRA_STATUSES.get(route.path_format, ()))
    if route.path_format not in _NO_DATABASE:
        statuses.add(503)
    return statuses


def security_scheme(scopes: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "oauth2",
        "description": (
            "The server is its own OAuth 2 authorization server (metadata at "
            "`/.well-known/oauth-authorization-server`). People sign in with the authorization-code flow, "
            "PKCE (S256) required for every client; partners' services use client credentials. Tokens are "
            "ES256 JWTs (RFC 9068). Scopes narrow a token within its role; "
            f"{', '.join(sorted(STEP_UP_SCOPES))} are granted only when asked for by name and honoured only "
            "shortly after the person's sign-in."
        ),
        "flows": {
            "authorizationCode": {
                "authorizationUrl": "/oauth/authorize",
                "tokenUrl": "/oauth/token",
                "refreshUrl": "/oauth/token",
                "scopes": scopes,
                "x-pkce-required": True,
            },
            "clientCredentials": {
                "tokenUrl": "/oauth/token",
                "scopes": {k: v for k, v in scopes.items() if k not in STEP_UP_SCOPES},
            },
        },
    }


def describe(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Add the security scheme, per-operation scopes and problem responses to FastAPI's ``schema``."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = security_scheme(dict(SCOPE_DESCRIPTIONS))
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    paths = schema.get("paths", {})
    for route in api_routes(app.routes):
        if not route.include_in_schema:
            continue
        item = paths.get(route.path_format, {})
        for method in route.methods:
            operation = item.get(method.lower())
            if operation is None:
                continue
            policy = route_policy(route)
            scope = required_scope(*policy) if policy is not None else None
            operation["security"] = [{SCHEME: [scope] if scope else []}] if policy is not None else []
            answers = operation.setdefault("responses", {})
            own_format = route.path_format.startswith(OWN_FORMAT_PREFIXES)
            for status, (description, content) in OAUTH_STATUSES.get((method, route.path_format), {}).items():
                answers[str(status)] = {"description": description, **({"content": content} if content else {})}
                if status == 429:
                    answers[str(status)]["headers"] = _HEADERS[429]
            for status in sorted(error_statuses(route) if not own_format else set()):
                answers.setdefault(str(status), problem_response(status))
            for status, answer in answers.items():
                if own_format or not status.isdigit() or int(status) < 400:
                    continue
                # FastAPI's own 422 (``HTTPValidationError``) and bare declared statuses: the real body.
                answer["content"] = {PROBLEM: {"schema": PROBLEM_REF}}
                if int(status) in _HEADERS:
                    answer.setdefault("headers", _HEADERS[int(status)])
                if answer.get("description") in (None, "", "Validation Error", "Additional Response"):
                    answer["description"] = DESCRIPTIONS.get(int(status), "Request failed")
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's, unused once replaced
        if f'"#/components/schemas/{name}"' not in json.dumps(schema):
            components["schemas"].pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    """Serve ``describe``'s document (built once, on first request of ``/openapi.json``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app, build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
