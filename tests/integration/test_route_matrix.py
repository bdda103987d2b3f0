"""Every route, called with every role's token and with bad tokens; the expected status comes from the
default policy file. A route that is neither public on purpose (``PUBLIC_PATHS``) nor guarded by
``authorize(obj, act)`` fails this test, as does a route whose behaviour disagrees with the policy."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from joserfc import jwt
from starlette.routing import Mount

from dataspace.app import create_app
from dataspace.auth import tokens
from dataspace.auth.policy import build_enforcer, default_rules
from dataspace.auth.principal import ROLES
from dataspace.auth.tokens import unverified_claims
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.http.deps import authorize
from dataspace.http.security import PUBLIC_PATHS, PUBLIC_PREFIXES
from dataspace.keys import KeyRing
from tests.auth_helpers import bearer, issue_token

Policy = tuple[str, str]


def _policies(dependant: Any) -> set[Policy]:
    found: set[Policy] = set()
    marker = getattr(dependant.call, "__dataspace_policy__", None)
    if marker is not None:
        found.add(marker)
    for sub in dependant.dependencies:
        found |= _policies(sub)
    return found


def _flat_routes(routes: list[Any]) -> list[Any]:
    """FastAPI >= 0.160 keeps included routers as branches; flatten them to effective routes."""
    flat: list[Any] = []
    for route in routes:
        if hasattr(route, "effective_candidates"):
            flat.extend(_flat_routes(route.effective_candidates()))
        else:
            flat.append(route)
    return flat


def route_table(app: FastAPI) -> tuple[list[tuple[str, str, set[Policy]]], list[str]]:
    """(method, path, policies) for every guarded route, and the description of every unguarded one."""
    guarded: list[tuple[str, str, set[Policy]]] = []
    unguarded: list[str] = []
    for route in _flat_routes(list(app.routes)):
        path = getattr(route, "path", "")
        original = getattr(route, "original_route", route)
        if isinstance(original, Mount):
            path = path or original.path
            if not any(path.rstrip("/") + "/" == p for p in PUBLIC_PREFIXES):
                unguarded.append(f"mount {path}")
            continue
        if path in PUBLIC_PATHS:
            continue
        if not isinstance(original, APIRoute) or route.dependant is None:
            unguarded.append(f"{type(original).__name__} {path}")
            continue
        policies = _policies(route.dependant)
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            if policies:
                guarded.append((method, path, policies))
            else:
                unguarded.append(f"{method} {path}")
    return guarded, unguarded


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens(ctx: Context) -> dict[str, str | None]:
    good = issue_token(ctx, "steward")
    claims = unverified_claims(good)
    kid = ctx.keys.token_key.kid
    active = tokens._jwk(ctx.keys.token_key, private=True)
    other = Context(settings=ctx.settings, db=ctx.db, keys=KeyRing.generate())
    revoked = issue_token(ctx, "steward")
    with ctx.db.transaction() as session:
        from sqlalchemy import update

        from dataspace.auth.models import IssuedToken

        session.execute(
            update(IssuedToken).where(IssuedToken.jti == unverified_claims(revoked)["jti"]).values(revoked_at=utcnow())
        )
    return {
        "no token": None,
        "malformed": "not-a-jwt",
        "garbage segments": "eyJ.eyJ.sig",
        "expired": issue_token(ctx, "steward", ttl=-60),
        "other key": issue_token(other, "steward"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{_b64(claims)}.",
        "wrong audience": jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": kid}, {**claims, "aud": "someone-else"}, active
        ),
        "wrong issuer": jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": kid}, {**claims, "iss": "https://evil.example"}, active
        ),
        "unknown jti": jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": kid}, {**claims, "jti": "never-issued"}, active
        ),
        "revoked": revoked,
    }


def test_unguarded_route_is_detected() -> None:
    app = FastAPI()

    @app.get("/v1/oops")
    def oops() -> dict[str, str]:
        return {}

    @app.get("/v1/fine")
    def fine(p: object = Depends(authorize("catalog", "read"))) -> dict[str, str]:
        return {}

    guarded, unguarded = route_table(app)
    assert unguarded == ["GET /v1/oops"]
    assert ("GET", "/v1/fine", {("catalog", "read")}) in guarded


@pytest.mark.parametrize("token", [None, "x", "a.b.c"])
def test_bad_token_shapes_do_not_crash_policy_route(ctx: Context, token: str | None) -> None:
    client = TestClient(create_app(ctx))
    response = client.get("/v1/admin/policies", headers=bearer(token) if token else {})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_every_route_with_every_role_and_bad_token(ctx: Context) -> None:
    app = create_app(ctx)
    guarded, unguarded = route_table(app)
    assert not unguarded, f"routes without an authorize(obj, act) dependency: {unguarded}"
    assert guarded

    enforcer = build_enforcer(default_rules())

    def expected_allowed(role: str, policies: set[Policy]) -> bool:
        return all(
            enforcer.enforce(role, obj, act) and (role != "compliance" or act == "read") for obj, act in policies
        )

    role_tokens = {role: issue_token(ctx, role) for role in ROLES}
    bad = bad_tokens(ctx)
    failures: list[str] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path, policies in guarded:
            url = _concrete(path)
            kwargs: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            for name, token in bad.items():
                status = client.request(method, url, headers=bearer(token) if token else {}, **kwargs).status_code
                if status != 401:
                    failures.append(f"{method} {path} with {name}: {status}, expected 401")
            for role, token in role_tokens.items():
                status = client.request(method, url, headers=bearer(token), **kwargs).status_code
                if expected_allowed(role, policies):
                    if status in (401, 403) or status >= 500:
                        failures.append(f"{method} {path} as {role} {sorted(policies)}: {status}, expected allowed")
                elif status != 403:
                    failures.append(f"{method} {path} as {role} {sorted(policies)}: {status}, expected 403")
    assert not failures, "\n".join(failures)
