"""Every route, called with every role's token and with bad tokens; the expected status comes from the
default policy file. A route that is neither public on purpose (``PUBLIC_PATHS``) nor guarded by
``authorize(obj, act)`` fails this test, as does a route whose behaviour disagrees with the policy.

``ROUTES`` below is the authorization contract, one line per route of the app: its object and action, the
scope that needs (``dataspace.auth.scopes``) and the roles the default Casbin policy lets through. A route
added without a line here, or whose object has no scope or rule, fails
``test_every_route_has_object_scope_and_rule``."""

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
from dataspace.auth.policy import add_rule, authorizer_for, build_enforcer, default_rules
from dataspace.auth.scopes import ROLE_SCOPES, STEP_UP_SCOPES, needs_recent_sign_in, required_scope
from dataspace.auth.tokens import unverified_claims
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.http.deps import authorize
from dataspace.http.security import PUBLIC_PATHS, PUBLIC_PREFIXES
from dataspace.keys import KeyRing
from dataspace.principal import ROLES
from tests.factories.identities import bearer, issue_token

Policy = tuple[str, str]


# Roles in ``ROUTES``: C customer, P partner, S steward, A compliance (auditor).
ROLE_LETTERS = {"C": "customer", "P": "partner", "S": "steward", "A": "compliance"}
# (method, path) -> (object, action, scope, roles allowed by the default policy)
ROUTES: dict[tuple[str, str], tuple[str, str, str, str]] = {
    ("GET", "/v1/me/consents"): ("me.consents", "read", "consents", "C"),
    ("POST", "/v1/me/consents"): ("me.consents", "write", "consents", "C"),
    ("GET", "/v1/me/consents/history"): ("me.consents", "read", "consents", "C"),
    ("GET", "/v1/me/offers"): ("me.consents", "read", "consents", "C"),
    ("DELETE", "/v1/me/consents/{grant_id}"): ("me.consents", "write", "consents", "C"),
    ("POST", "/v1/me/consents/{grant_id}/renew"): ("me.consents", "write", "consents", "C"),
    ("GET", "/v1/me/receipts/{receipt_id}"): ("me.receipts", "read", "consents", "C"),
    ("GET", "/v1/me/receipts/{receipt_id}/kantara"): ("me.receipts", "read", "consents", "C"),
    ("GET", "/v1/consents/stats"): ("consents.stats", "read", "audit", "SA"),
    ("GET", "/v1/me/usage"): ("me.usage", "read", "usage", "C"),
    ("GET", "/v1/me/usage/{index}/proof"): ("me.usage", "read", "usage", "C"),
    ("GET", "/v1/me/usage/checkpoint"): ("me.usage", "read", "usage", "C"),
    ("GET", "/v1/me/usage/consistency"): ("me.usage", "read", "usage", "C"),
    ("POST", "/v1/audit/checkpoints/check"): ("audit", "read", "audit", "A"),
    ("GET", "/v1/me/points"): ("me.points", "read", "points", "C"),
    ("GET", "/v1/me/points/postings"): ("me.points", "read", "points", "C"),
    ("GET", "/v1/rewards"): ("rewards", "read", "points", "CSA"),
    ("POST", "/v1/rewards"): ("rewards", "write", "points", "S"),
    ("PATCH", "/v1/rewards/{key}"): ("rewards", "write", "points", "S"),
    ("POST", "/v1/me/redemptions"): ("me.redemptions", "write", "redeem", "C"),
    ("GET", "/v1/me/redemptions"): ("me.points", "read", "points", "C"),
    ("GET", "/v1/catalog/fields"): ("catalog", "read", "catalog", "CPSA"),
    ("GET", "/v1/catalog/manual"): ("catalog", "read", "catalog", "CPSA"),
    ("GET", "/v1/catalog/fields/{key}"): ("catalog", "read", "catalog", "CPSA"),
    ("GET", "/v1/catalog/fields/{key}/history"): ("catalog", "read", "catalog", "CPSA"),
    ("POST", "/v1/catalog/fields"): ("catalog", "write", "catalog", "S"),
    ("PATCH", "/v1/catalog/fields/{key}"): ("catalog", "write", "catalog", "S"),
    ("DELETE", "/v1/catalog/fields/{key}"): ("catalog", "write", "catalog", "S"),
    ("GET", "/v1/catalog/purposes"): ("catalog", "read", "catalog", "CPSA"),
    ("POST", "/v1/catalog/purposes"): ("catalog", "write", "catalog", "S"),
    ("POST", "/v1/catalog/load"): ("catalog", "write", "catalog", "S"),
    ("GET", "/v1/partners"): ("catalog", "read", "catalog", "CPSA"),
    ("POST", "/v1/partners"): ("partners", "write", "admin", "S"),
    ("POST", "/v1/ingest"): ("ingest", "write", "admin", "S"),
    ("POST", "/v1/ingest/csv"): ("ingest", "write", "admin", "S"),
    ("GET", "/v1/audit/events"): ("audit", "read", "audit", "A"),
    ("GET", "/v1/audit/actions"): ("audit", "read", "audit", "A"),
    ("GET", "/v1/audit/export"): ("audit", "read", "audit", "A"),
    ("GET", "/v1/audit/checkpoint"): ("audit.checkpoint", "read", "audit", "SA"),
    ("GET", "/v1/audit/proofs/inclusion"): ("audit", "read", "audit", "A"),
    ("GET", "/v1/audit/proofs/consistency"): ("audit", "read", "audit", "A"),
    ("GET", "/v1/admin/policies"): ("admin.policies", "read", "admin", "SA"),
    ("POST", "/v1/admin/policies"): ("admin.policies", "write", "policy", "S"),
    ("DELETE", "/v1/admin/policies"): ("admin.policies", "write", "policy", "S"),
    ("POST", "/v1/partner/contracts"): ("partner.contracts", "write", "partner", "P"),
    ("GET", "/v1/partner/contracts"): ("partner.contracts", "read", "partner", "P"),
    ("GET", "/v1/partner/contracts/{contract_id}"): ("partner.contracts", "read", "partner", "P"),
    ("PUT", "/v1/partner/linkage/declarations"): ("partner.contracts", "write", "partner", "P"),
    ("GET", "/v1/partner/linkage/declarations/{contract_id}"): ("partner.contracts", "read", "partner", "P"),
    ("GET", "/v1/linkage/declarations/{contract_id}"): ("contracts", "read", "admin", "SA"),
    ("POST", "/v1/partner/linkage"): ("partner.contracts", "write", "partner", "P"),
    ("GET", "/v1/partner/linkage/{contribution_id}"): ("partner.contracts", "read", "partner", "P"),
    ("GET", "/v1/partner/linkage/{contribution_id}/message"): ("partner.contracts", "read", "partner", "P"),
    ("PUT", "/v1/partner/linkage/{contribution_id}/reply"): ("partner.contracts", "write", "partner", "P"),
    ("GET", "/v1/me/linkage"): ("me.consents", "read", "consents", "C"),
    ("GET", "/v1/contracts"): ("contracts", "read", "admin", "SA"),
    ("POST", "/v1/contracts/{contract_id}/approve"): ("contracts", "write", "admin", "S"),
    ("POST", "/v1/contracts/{contract_id}/reject"): ("contracts", "write", "admin", "S"),
    ("POST", "/v1/contracts/{contract_id}/revoke"): ("contracts", "write", "admin", "S"),
    ("PUT", "/v1/privacy-budgets"): ("contracts", "write", "admin", "S"),
    ("POST", "/v1/partner/models"): ("partner.models", "write", "partner", "P"),
    ("GET", "/v1/partner/models"): ("partner.models", "read", "partner", "P"),
    ("GET", "/v1/models"): ("models", "read", "admin", "SA"),
    ("POST", "/v1/models/{model_id}/approve"): ("models", "write", "admin", "S"),
    ("POST", "/v1/partner/jobs"): ("partner.jobs", "write", "partner", "P"),
    ("GET", "/v1/partner/jobs"): ("partner.jobs", "read", "partner", "P"),
    ("GET", "/v1/partner/jobs/{job_id}"): ("partner.jobs", "read", "partner", "P"),
    ("POST", "/v1/partner/jobs/{job_id}/cancel"): ("partner.jobs", "write", "partner", "P"),
    ("GET", "/v1/partner/jobs/{job_id}/results"): ("partner.jobs", "read", "partner", "P"),
    ("GET", "/v1/partner/budget"): ("partner.budget", "read", "partner", "P"),
    ("GET", "/v1/jobs/{job_id}/decisions"): ("jobs.decisions", "read", "admin", "SA"),
    ("POST", "/v1/decisions/{contract_id}"): ("realtime.decisions", "write", "admin", "S"),
    ("GET", "/v1/decisions"): ("realtime.decisions", "read", "admin", "SA"),
    ("POST", "/v1/partner/webhooks"): ("partner.webhooks", "write", "partner", "P"),
    ("POST", "/v1/partner/event-subscriptions"): ("partner.webhooks", "write", "partner", "P"),
    ("POST", "/v1/event-contracts"): ("event_contracts", "write", "admin", "S"),
    ("GET", "/v1/event-contracts"): ("event_contracts", "read", "admin", "SA"),
    ("GET", "/v1/event-contracts/{contract_id}"): ("event_contracts", "read", "admin", "SA"),
    ("POST", "/v1/event-contracts/{contract_id}/approve"): ("event_contracts", "write", "admin", "S"),
    ("POST", "/v1/event-contracts/{contract_id}/reject"): ("event_contracts", "write", "admin", "S"),
    ("GET", "/v1/event-contracts/{contract_id}/spec"): ("event_contracts", "read", "admin", "SA"),
    ("GET", "/v1/event-contracts/{contract_id}/deliveries"): ("event_deliveries", "read", "admin", "S"),
    ("POST", "/v1/partner/event-contracts"): ("partner.event_contracts", "write", "partner", "P"),
    ("GET", "/v1/partner/event-contracts"): ("partner.event_contracts", "read", "partner", "P"),
    ("GET", "/v1/partner/event-contracts/{contract_id}"): ("partner.event_contracts", "read", "partner", "P"),
    ("POST", "/v1/partner/event-contracts/{contract_id}/approve"): ("partner.event_contracts", "write", "partner", "P"),
    ("POST", "/v1/partner/event-contracts/{contract_id}/reject"): ("partner.event_contracts", "write", "partner", "P"),
    ("GET", "/v1/partner/event-contracts/{contract_id}/spec"): ("partner.event_contracts", "read", "partner", "P"),
    ("POST", "/v1/events"): ("events", "write", "admin", "S"),
    ("GET", "/v1/events"): ("events", "read", "admin", "S"),
    ("POST", "/v1/partner/events"): ("partner.events", "write", "partner", "P"),
    ("GET", "/v1/steward/collaboration"): ("collaboration", "read", "admin", "S"),
    ("GET", "/v1/partner/collaboration"): ("partner.collaboration", "read", "partner", "P"),
    ("POST", "/v1/partner/collaboration/{contract_id}/releases"): ("partner.collaboration", "write", "partner", "P"),
    ("GET", "/v1/event-deliveries"): ("event_deliveries", "read", "admin", "S"),
    ("POST", "/v1/event-deliveries/{delivery_id}/replay"): ("event_deliveries", "write", "admin", "S"),
    ("GET", "/v1/partner/webhooks"): ("partner.webhooks", "read", "partner", "P"),
    ("DELETE", "/v1/partner/webhooks/{subscription_id}"): ("partner.webhooks", "write", "partner", "P"),
    ("GET", "/v1/partner/webhooks/deliveries"): ("partner.webhooks", "read", "partner", "P"),
    ("POST", "/v1/partner/webhooks/deliveries/{delivery_id}/replay"): ("partner.webhooks", "write", "partner", "P"),
    ("GET", "/v1/me/export"): ("me.export", "read", "usage", "C"),
    ("GET", "/v1/me/profile"): ("me.export", "read", "usage", "C"),
    ("DELETE", "/v1/me"): ("me.erasure", "write", "erase", "C"),
    ("GET", "/v1/compliance/records-of-processing"): ("compliance.records", "read", "audit", "SA"),
    ("GET", "/v1/compliance/requests"): ("compliance.requests", "read", "audit", "SA"),
    ("GET", "/v1/jobs"): ("jobs", "read", "admin", "SA"),
    ("GET", "/v1/models/{model_id}/review"): ("models", "read", "admin", "SA"),
    ("POST", "/v1/models/{model_id}/reject"): ("models", "write", "admin", "S"),
    ("GET", "/v1/privacy-budgets"): ("contracts", "read", "admin", "SA"),
}


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

    # People who signed in just now, with every scope their role may hold (step-up ones included).
    role_tokens = {role: issue_token(ctx, role, person=True) for role in ROLES}
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


def test_every_route_has_object_scope_and_rule(ctx: Context) -> None:
    """The app's routes are exactly ``ROUTES``; each authorizes one (object, action) whose scope is listed in
    ``OBJECT_SCOPES`` and held by exactly the roles the Casbin policy lets through; nothing else passes."""
    guarded, unguarded = route_table(create_app(ctx))
    assert not unguarded
    actual = {(method, path): policies for method, path, policies in guarded}
    missing = sorted(set(actual) - set(ROUTES))
    assert not missing, f"routes not in ROUTES (add object, scope and Casbin rule): {missing}"
    assert not sorted(set(ROUTES) - set(actual)), "ROUTES lists routes the app no longer has"
    enforcer = build_enforcer(default_rules())
    for key, (obj, act, scope, letters) in ROUTES.items():
        assert actual[key] == {(obj, act)}, key
        assert required_scope(obj, act) == scope, key
        allowed = {ROLE_LETTERS[letter] for letter in letters}
        for role in ROLES:
            ruled = bool(enforcer.enforce(role, obj, act)) and (role != "compliance" or act == "read")
            assert ruled == (role in allowed), f"{key}: Casbin rule for {role}"
            # A role the policy lets through must be able to hold the scope, or the route is unreachable.
            assert (scope in ROLE_SCOPES[role]) >= (role in allowed), f"{key}: {role} cannot hold {scope}"
        assert (scope in STEP_UP_SCOPES) == needs_recent_sign_in(obj, act)
    # Every scope a role may hold opens at least one route for it (no scope handed out for nothing).
    for role in ROLES:
        used = {sc for (_, _, sc, letters) in ROUTES.values() if role in {ROLE_LETTERS[x] for x in letters}}
        assert ROLE_SCOPES[role] == used, role


def test_object_without_scope_is_denied(ctx: Context) -> None:
    """Fail closed: a route guarded by an object no scope rule names is refused to every token."""
    app = create_app(ctx)

    @app.get("/v1/unlisted")
    def unlisted(p: object = Depends(authorize("me.unlisted", "read"))) -> dict[str, str]:
        return {}

    with ctx.db.transaction() as session:
        add_rule(session=session, role="customer", obj="me.*", act="read")
    authorizer_for(ctx, ctx.db).invalidate()
    token = issue_token(ctx, "customer")
    with TestClient(app) as client:
        assert client.get("/v1/me/consents", headers=bearer(token)).status_code == 200
        assert client.get("/v1/unlisted", headers=bearer(token)).status_code == 403


def test_step_up_routes_refuse_stale_sign_in_and_client_credentials(ctx: Context) -> None:
    """Every irreversible route: a person who signed in longer ago than ``reauth_seconds`` gets 401 with RFC
    9470 guidance; a token without ``auth_time`` too; a client-credentials token never holds the scope (403)."""
    app = create_app(ctx)
    step_up = {key: row for key, row in ROUTES.items() if row[2] in STEP_UP_SCOPES}
    assert {key[1] for key in step_up} == {"/v1/me", "/v1/me/redemptions", "/v1/admin/policies"}
    max_age = ctx.settings.reauth_seconds
    with TestClient(app, raise_server_exceptions=False) as client:
        for (method, path), (_obj, _act, _scope, letters) in step_up.items():
            kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
            headers = {"Idempotency-Key": "k-1"} if path == "/v1/me/redemptions" else {}
            for letter in letters:
                role = ROLE_LETTERS[letter]
                for ago in (max_age + 60, None):
                    token = issue_token(ctx, role, person=True, signed_in_ago=ago)
                    response = client.request(method, path, headers={**bearer(token), **headers}, **kwargs)
                    assert response.status_code == 401, (method, path, role, ago)
                    assert response.headers["content-type"].startswith("application/problem+json")
                    challenge = response.headers["www-authenticate"]
                    assert 'error="insufficient_user_authentication"' in challenge
                    assert f"max_age={max_age}" in challenge
                    assert response.json()["max_age"] == max_age
                if role != "customer":
                    machine = issue_token(ctx, role)  # client credentials
                    response = client.request(method, path, headers={**bearer(machine), **headers}, **kwargs)
                    assert response.status_code == 403, (method, path, role)
