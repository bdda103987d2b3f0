"""Scopes fail closed and irreversible actions need a recent sign-in, over real OAuth flows (authlib's client
against a running server): the attack of a third-party app holding a customer's ``catalog``-only token, the
``scope`` member of every token response, ``auth_time`` through code exchange and refresh rotation, the
RFC 9470 step-up answer, and ``max_age`` / ``prompt`` at the authorization endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from joserfc import jws
from sqlalchemy import select, update

from dataspace.auth import service
from dataspace.auth.models import AuthorizationCode
from dataspace.context import Context
from dataspace.errors import InvalidInput
from dataspace.keys import KeyRing
from tests.factories.identities import bearer, make_client, make_user
from tests.integration.oauth_server import running_server
from tests.integration.test_oauth_flows import REDIRECT, OAuth2Client, _browser_login

PORTAL = "portal-under-test"
ERASE = {"confirm": "erase my data"}


@pytest.fixture
def server(ctx: Context) -> Iterator[tuple[str, Context]]:
    own = Context(settings=ctx.settings, db=ctx.db, keys=KeyRing.generate())
    with running_server(own) as served:
        make_client(own, "customer", public=True, client_id=PORTAL, redirect_uris=[REDIRECT])
        yield served


def _claims(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(jws.extract_compact(token.encode()).payload)
    return payload


def _sign_in(
    base: str,
    ctx: Context,
    username: str,
    *,
    client_id: str = PORTAL,
    scope: str | None = None,
    signed_in_ago: float = 0,
    **extra: str,
) -> tuple[OAuth2Client, dict[str, Any]]:
    """The authorization-code flow as a browser app runs it; ``signed_in_ago`` back-dates the sign-in (the
    code is created when the person signs in) to stand for a sign-in that long ago."""
    oauth = OAuth2Client(
        client_id=client_id,
        redirect_uri=REDIRECT,
        scope=scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=verifier, **extra)
    response = _browser_login(url, username, "correct horse battery staple")
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    if signed_in_ago:
        with ctx.db.transaction() as session:
            row = session.scalars(select(AuthorizationCode).order_by(AuthorizationCode.id.desc())).first()
            assert row is not None
            session.execute(
                update(AuthorizationCode)
                .where(AuthorizationCode.id == row.id)
                .values(created_at=row.created_at - timedelta(seconds=signed_in_ago))
            )
    token = oauth.fetch_token(f"{base}/oauth/token", authorization_response=location, code_verifier=verifier)
    return oauth, dict(token)


def _raw_token_response(base: str, data: dict[str, str], auth: tuple[str, str] | None = None) -> dict[str, Any]:
    response = httpx.post(f"{base}/oauth/token", data=data, auth=auth or httpx.USE_CLIENT_DEFAULT)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_catalog_only_customer_token_reaches_nothing_else_and_cannot_erase(server: tuple[str, Context]) -> None:
    """The reported attack: a customer hands a third-party app a ``catalog`` token to read the data manual."""
    base, ctx = server
    user = make_user(ctx, "customer")
    _, token = _sign_in(base, ctx, user.username, scope="catalog")
    assert token["scope"] == "catalog"
    app = bearer(token["access_token"])
    assert httpx.get(f"{base}/v1/catalog/manual", headers=app).status_code == 200
    refused = [
        ("GET", "/v1/me/consents", None),
        ("POST", "/v1/me/consents", {"purpose": "marketing"}),
        ("GET", "/v1/me/consents/history", None),
        ("GET", "/v1/me/receipts/1", None),
        ("GET", "/v1/me/points", None),
        ("GET", "/v1/me/redemptions", None),
        ("POST", "/v1/me/redemptions", {"reward": "lounge"}),
        ("GET", "/v1/me/usage", None),
        ("GET", "/v1/me/export", None),
        ("DELETE", "/v1/me", None),
    ]
    for method, path, body in refused:
        headers = {**app, "Idempotency-Key": "attack-1"}
        params = ERASE if path == "/v1/me" else None
        response = httpx.request(method, f"{base}{path}", headers=headers, json=body, params=params)
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    # The account is still there: its owner, signing in for consents, reads them.
    _, own = _sign_in(base, ctx, user.username, scope="consents")
    assert httpx.get(f"{base}/v1/me/consents", headers=bearer(own["access_token"])).status_code == 200


def test_token_response_always_states_the_scope(server: tuple[str, Context]) -> None:
    """RFC 6749 §5.1: ``scope`` whenever it differs from the request, also when it narrowed to nothing."""
    base, ctx = server
    user = make_user(ctx, "customer")
    # Authorization code: narrowed, narrowed to nothing, and omitted (everyday scopes, no step-up ones).
    assert _sign_in(base, ctx, user.username, scope="catalog admin")[1]["scope"] == "catalog"
    _, nothing = _sign_in(base, ctx, user.username, scope="admin")
    assert nothing["scope"] == ""
    assert _claims(nothing["access_token"])["scope"] == ""
    assert httpx.get(f"{base}/v1/catalog/manual", headers=bearer(nothing["access_token"])).status_code == 403
    _, default = _sign_in(base, ctx, user.username)
    assert default["scope"] == "catalog consents points usage"

    # Refresh: narrowed on request, unchanged (and stated) without one.
    _, full = _sign_in(base, ctx, user.username, scope="catalog consents erase")
    assert full["scope"] == "catalog consents erase"
    narrowed = _raw_token_response(
        base,
        {
            "grant_type": "refresh_token",
            "refresh_token": full["refresh_token"],
            "client_id": PORTAL,
            "scope": "catalog",
        },
    )
    assert narrowed["scope"] == "catalog"
    same = _raw_token_response(
        base, {"grant_type": "refresh_token", "refresh_token": narrowed["refresh_token"], "client_id": PORTAL}
    )
    assert same["scope"] == "catalog"

    # Client credentials: narrowed, narrowed to nothing, and a step-up scope is never granted to a machine.
    partner = make_client(ctx, "partner")
    creds = (partner.client.client_id, str(partner.secret))
    assert (
        _raw_token_response(base, {"grant_type": "client_credentials", "scope": "partner admin"}, creds)["scope"]
        == "partner"
    )
    assert _raw_token_response(base, {"grant_type": "client_credentials", "scope": "admin"}, creds)["scope"] == ""
    assert _raw_token_response(base, {"grant_type": "client_credentials"}, creds)["scope"] == "catalog partner"
    steward = make_client(ctx, "steward")
    both = (steward.client.client_id, str(steward.secret))
    granted = _raw_token_response(base, {"grant_type": "client_credentials", "scope": "admin policy"}, both)
    assert granted["scope"] == "admin"
    assert "auth_time" not in _claims(granted["access_token"])


def test_erasure_needs_its_scope_and_a_recent_sign_in_kept_through_refresh(server: tuple[str, Context]) -> None:
    base, ctx = server
    max_age = ctx.settings.reauth_seconds
    user = make_user(ctx, "customer")

    # Signed in just now, but without the erase scope: 403, whatever the time.
    _, everyday = _sign_in(base, ctx, user.username)
    assert httpx.delete(f"{base}/v1/me", params=ERASE, headers=bearer(everyday["access_token"])).status_code == 403

    # The erase scope, from a sign-in longer ago than max_age: 401 with RFC 9470 guidance.
    oauth, stale = _sign_in(base, ctx, user.username, scope="consents erase", signed_in_ago=max_age + 120)
    signed_in_at = _claims(stale["access_token"])["auth_time"]
    response = httpx.delete(f"{base}/v1/me", params=ERASE, headers=bearer(stale["access_token"]))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_user_authentication"' in challenge
    assert f"max_age={max_age}" in challenge
    assert response.json()["code"] == "insufficient_user_authentication"
    assert response.json()["max_age"] == max_age
    # The token still works for everyday actions.
    assert httpx.get(f"{base}/v1/me/consents", headers=bearer(stale["access_token"])).status_code == 200

    # Refreshing is not signing in: the rotated token carries the ORIGINAL auth_time and is refused too.
    rotated = oauth.refresh_token(f"{base}/oauth/token", refresh_token=stale["refresh_token"])
    assert _claims(rotated["access_token"])["auth_time"] == signed_in_at
    assert httpx.delete(f"{base}/v1/me", params=ERASE, headers=bearer(rotated["access_token"])).status_code == 401

    # Step up: sign in again with prompt=login and max_age, then the same request succeeds.
    _, fresh = _sign_in(base, ctx, user.username, scope="consents erase", prompt="login", max_age=str(max_age))
    assert _claims(fresh["access_token"])["auth_time"] > signed_in_at
    assert httpx.delete(f"{base}/v1/me", params=ERASE, headers=bearer(fresh["access_token"])).status_code == 200
    # Erased: every token of the account is revoked.
    assert httpx.get(f"{base}/v1/me/consents", headers=bearer(fresh["access_token"])).status_code == 401


def test_redemption_needs_redeem_scope_and_recent_sign_in(server: tuple[str, Context]) -> None:
    base, ctx = server
    user = make_user(ctx, "customer")
    body, key = {"reward": "no-such-reward"}, {"Idempotency-Key": "redeem-1"}

    def status(token: dict[str, Any]) -> int:
        headers = {**bearer(token["access_token"]), **key}
        return httpx.post(f"{base}/v1/me/redemptions", json=body, headers=headers).status_code

    assert status(_sign_in(base, ctx, user.username, scope="points")[1]) == 403
    assert status(_sign_in(base, ctx, user.username, scope="points redeem", signed_in_ago=3600)[1]) == 401
    # Past authorization, the request reaches the service (which finds no such reward).
    assert status(_sign_in(base, ctx, user.username, scope="points redeem")[1]) not in (401, 403)


def test_policy_changes_need_a_steward_person_signed_in_recently(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "steward", public=True, client_id="console-under-test", redirect_uris=[REDIRECT])
    steward = make_user(ctx, "steward")
    rule = {"role": "partner", "obj": "rewards", "act": "read"}
    url = f"{base}/v1/admin/policies"

    _, old = _sign_in(
        base, ctx, steward.username, client_id="console-under-test", scope="admin policy", signed_in_ago=900
    )
    assert httpx.post(url, json=rule, headers=bearer(old["access_token"])).status_code == 401
    _, admin = _sign_in(base, ctx, steward.username, client_id="console-under-test", scope="admin")
    assert httpx.post(url, json=rule, headers=bearer(admin["access_token"])).status_code == 403
    _, fresh = _sign_in(base, ctx, steward.username, client_id="console-under-test", scope="admin policy")
    assert httpx.post(url, json=rule, headers=bearer(fresh["access_token"])).status_code == 201
    # A steward's automation (client credentials) cannot hold the scope at all.
    with ctx.db.transaction() as session, pytest.raises(InvalidInput):
        service.create_client(session=session, role="steward", scopes=["admin", "policy"])


def test_authorize_honours_prompt_and_max_age(server: tuple[str, Context]) -> None:
    base, _ = server
    oauth = OAuth2Client(client_id=PORTAL, redirect_uri=REDIRECT, code_challenge_method="S256")
    verifier = generate_token(48)

    def authorize(**extra: str) -> httpx.Response:
        url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=verifier, **extra)
        return httpx.get(url)

    page = authorize(prompt="login", max_age="300")
    assert page.status_code == 200
    assert "needs a recent sign-in" in page.text
    assert 'name="prompt" value="login"' in page.text
    assert 'name="max_age" value="300"' in page.text
    assert "needs a recent sign-in" not in authorize().text
    # prompt=none can never be met (every authorization asks for the password): login_required.
    silent = authorize(prompt="none")
    assert silent.status_code == 302
    assert parse_qs(urlsplit(silent.headers["location"]).query)["error"] == ["login_required"]
    for bad in ({"max_age": "soon"}, {"max_age": "-1"}, {"prompt": "select_everything"}):
        refused = authorize(**bad)
        assert refused.status_code == 302, bad
        assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == ["invalid_request"]


def test_sign_in_time_in_the_future_is_not_believed(server: tuple[str, Context]) -> None:
    """Tokens are signed, so only an issuer fault could carry a future ``auth_time``; it is not trusted."""
    base, ctx = server
    user = make_user(ctx, "customer")
    _, token = _sign_in(base, ctx, user.username, scope="erase", signed_in_ago=-3600)
    assert httpx.delete(f"{base}/v1/me", params=ERASE, headers=bearer(token["access_token"])).status_code == 401
