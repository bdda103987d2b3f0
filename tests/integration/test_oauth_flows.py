"""The OAuth 2 flows over real HTTP with authlib's client: client credentials, authorization code + PKCE,
refresh rotation, revocation, introspection, metadata/JWKS, key rotation, and the bad-input cases."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # authlib 1.9 nudges towards the "httpx2" package; plain httpx is what this project uses.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from sqlalchemy import select

from dataspace.audit.search import search_events
from dataspace.auth.models import AuthorizationCode, LoginAttempt
from dataspace.context import Context
from dataspace.keys import KeyRing
from tests.factories.identities import TEST_PASSWORD, bearer, issue_token, make_client, make_user
from tests.integration.oauth_server import running_server

REDIRECT = "http://127.0.0.1:9/callback"
GUARDED = "/v1/admin/policies"  # steward/compliance may read it, everyone else gets 403


@pytest.fixture
def server(ctx: Context) -> Iterator[tuple[str, Context]]:
    # A private key ring, so rotating it cannot affect other tests.
    own = Context(settings=ctx.settings, db=ctx.db, keys=KeyRing.generate())
    with running_server(own) as served:
        yield served


def _hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def _browser_login(authorize_url: str, username: str, password: str, action: str = "approve") -> httpx.Response:
    """What the user's browser does: open the login page, submit the form; returns the final response."""
    page = httpx.get(authorize_url)
    assert page.status_code == 200, page.text
    assert "no-store" in page.headers["cache-control"]
    fields = {k: v.replace("&amp;", "&") for k, v in _hidden_fields(page.text).items()}
    fields.update(username=username, password=password, action=action)
    base = authorize_url.split("/oauth/", 1)[0]
    return httpx.post(f"{base}/oauth/authorize", data=fields, cookies=page.cookies)


def _code_flow(
    base: str, client_id: str, username: str, *, scope: str | None = None, password: str = TEST_PASSWORD
) -> tuple[OAuth2Client, dict[str, str], str, str]:
    oauth = OAuth2Client(
        client_id=client_id,
        redirect_uri=REDIRECT,
        scope=scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    url, _state = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=verifier)
    response = _browser_login(url, username, password)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    token = oauth.fetch_token(f"{base}/oauth/token", authorization_response=location, code_verifier=verifier)
    return oauth, token, location, verifier


def _events(ctx: Context, action: str) -> list[object]:
    with ctx.db.session() as session:
        return list(search_events(session, action=action).items)


def test_metadata_and_jwks(server: tuple[str, Context]) -> None:
    base, ctx = server
    meta = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == base
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(meta["grant_types_supported"])
    keys = httpx.get(meta["jwks_uri"]).json()["keys"]
    assert [k["kid"] for k in keys] == [k.kid for k in ctx.keys.token_keys]
    assert all("d" not in k for k in keys)  # public halves only


def test_client_credentials_token_works_and_claims(server: tuple[str, Context]) -> None:
    base, ctx = server
    new = make_client(ctx, "steward")
    oauth = OAuth2Client(new.client.client_id, new.secret)
    token = oauth.fetch_token(f"{base}/oauth/token", grant_type="client_credentials", scope="admin catalog")
    assert token["token_type"].lower() == "bearer"
    assert token["scope"] == "admin catalog"
    assert "refresh_token" not in token
    response = httpx.get(f"{base}{GUARDED}", headers=bearer(token["access_token"]))
    assert response.status_code == 200
    # Without the admin scope the same client is refused.
    narrow = oauth.fetch_token(f"{base}/oauth/token", grant_type="client_credentials", scope="catalog")
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(narrow["access_token"])).status_code == 403


def test_wrong_secret_and_unknown_client_are_invalid_client(server: tuple[str, Context]) -> None:
    base, ctx = server
    new = make_client(ctx, "partner")
    for cid, secret in ((new.client.client_id, "wrong"), ("no-such-client", "x")):
        with pytest.raises(OAuthError) as err:
            OAuth2Client(cid, secret).fetch_token(f"{base}/oauth/token", grant_type="client_credentials")
        assert err.value.error == "invalid_client"
    assert len(_events(ctx, "oauth.error")) == 2


def test_authorization_code_pkce_refresh_rotation_and_reuse(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "steward", public=True, client_id="console", redirect_uris=[REDIRECT])
    user = make_user(ctx, "steward")
    oauth, token, _, _ = _code_flow(base, "console", user.username, scope="admin catalog")
    assert token["scope"] == "admin catalog"
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(token["access_token"])).status_code == 200

    rotated = oauth.refresh_token(f"{base}/oauth/token", refresh_token=token["refresh_token"])
    assert rotated["refresh_token"] != token["refresh_token"]
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(rotated["access_token"])).status_code == 200

    # Presenting the rotated-away refresh token again: refused, and the whole family is revoked.
    with pytest.raises(OAuthError) as err:
        oauth.refresh_token(f"{base}/oauth/token", refresh_token=token["refresh_token"])
    assert err.value.error == "invalid_grant"
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(rotated["access_token"])).status_code == 401
    assert _events(ctx, "oauth.refresh_reused")


def test_customer_code_flow_carries_subject(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "customer", public=True, client_id="portal", redirect_uris=[REDIRECT])
    user = make_user(ctx, "customer")
    _, token, _, _ = _code_flow(base, "portal", user.username)
    assert set(token["scope"].split()) == {"catalog", "consents", "usage", "points"}
    # Valid token, wrong role for the admin API: 403, not 401.
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(token["access_token"])).status_code == 403
    # A steward asking for "admin" through the customer portal is refused at login (role mismatch).
    staff = make_user(ctx, "steward")
    oauth = OAuth2Client(client_id="portal", redirect_uri=REDIRECT, code_challenge_method="S256")
    url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=generate_token(48))
    assert _browser_login(url, staff.username, TEST_PASSWORD).status_code == 403


def test_replayed_code_is_refused_and_revokes_tokens(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "compliance", public=True, client_id="console", redirect_uris=[REDIRECT])
    user = make_user(ctx, "compliance")
    oauth, token, location, verifier = _code_flow(base, "console", user.username)
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(token["access_token"])).status_code == 200
    with pytest.raises(OAuthError) as err:
        oauth.fetch_token(f"{base}/oauth/token", authorization_response=location, code_verifier=verifier)
    assert err.value.error == "invalid_grant"
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(token["access_token"])).status_code == 401
    with ctx.db.session() as session:
        assert session.scalar(select(AuthorizationCode.used_at)) is not None
    assert _events(ctx, "oauth.code_replayed")


def test_wrong_verifier_is_invalid_grant(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "steward", public=True, client_id="console", redirect_uris=[REDIRECT])
    user = make_user(ctx, "steward")
    oauth = OAuth2Client(
        client_id="console", redirect_uri=REDIRECT, code_challenge_method="S256", token_endpoint_auth_method="none"
    )
    url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=generate_token(48))
    location = _browser_login(url, user.username, TEST_PASSWORD).headers["location"]
    with pytest.raises(OAuthError) as err:
        oauth.fetch_token(f"{base}/oauth/token", authorization_response=location, code_verifier=generate_token(48))
    assert err.value.error == "invalid_grant"


def test_pkce_is_required(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "steward", public=True, client_id="console", redirect_uris=[REDIRECT])
    oauth = OAuth2Client(client_id="console", redirect_uri=REDIRECT)
    url, state = oauth.create_authorization_url(f"{base}/oauth/authorize")
    response = httpx.get(url)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == [state]


def test_wrong_redirect_uri_and_unknown_client_never_redirect(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "steward", public=True, client_id="console", redirect_uris=[REDIRECT])
    for client_id, redirect in (("console", "https://evil.example/cb"), ("nobody", REDIRECT)):
        oauth = OAuth2Client(client_id=client_id, redirect_uri=redirect, code_challenge_method="S256")
        url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=generate_token(48))
        response = httpx.get(url)
        assert response.status_code == 400
        assert "location" not in response.headers
    assert len(_events(ctx, "oauth.error")) == 2


def test_deny_redirects_with_access_denied(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "steward", public=True, client_id="console", redirect_uris=[REDIRECT])
    oauth = OAuth2Client(client_id="console", redirect_uri=REDIRECT, code_challenge_method="S256")
    url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=generate_token(48))
    response = _browser_login(url, "", "", action="deny")
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["access_denied"]


def test_failed_logins_are_rate_limited(server: tuple[str, Context]) -> None:
    base, ctx = server
    make_client(ctx, "steward", public=True, client_id="console", redirect_uris=[REDIRECT])
    user = make_user(ctx, "steward")
    oauth = OAuth2Client(client_id="console", redirect_uri=REDIRECT, code_challenge_method="S256")
    url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=generate_token(48))
    for _ in range(5):
        assert _browser_login(url, user.username, "wrong password!").status_code == 401
    # Even the right password is not checked any more.
    assert _browser_login(url, user.username, TEST_PASSWORD).status_code == 429
    with ctx.db.session() as session:
        assert session.scalar(select(LoginAttempt.id).limit(1)) is not None
    assert len(_events(ctx, "auth.login_failed")) == 5


def test_revocation_and_introspection(server: tuple[str, Context]) -> None:
    base, ctx = server
    new = make_client(ctx, "steward")
    oauth = OAuth2Client(new.client.client_id, new.secret)
    token = oauth.fetch_token(f"{base}/oauth/token", grant_type="client_credentials")
    access = token["access_token"]
    info = oauth.introspect_token(f"{base}/oauth/introspect", token=access).json()
    assert info["active"] is True
    assert info["role"] == "steward"
    assert info["client_id"] == new.client.client_id

    assert oauth.revoke_token(f"{base}/oauth/revoke", token=access).status_code == 200
    assert httpx.get(f"{base}{GUARDED}", headers=bearer(access)).status_code == 401
    assert oauth.introspect_token(f"{base}/oauth/introspect", token=access).json() == {"active": False}
    # Unknown tokens: revocation still answers 200 (RFC 7009 §2.2), introspection says inactive.
    assert oauth.revoke_token(f"{base}/oauth/revoke", token="garbage").status_code == 200
    assert oauth.introspect_token(f"{base}/oauth/introspect", token="garbage").json() == {"active": False}


def test_other_clients_cannot_introspect_or_revoke_foreign_tokens(server: tuple[str, Context]) -> None:
    base, ctx = server
    owner, other = make_client(ctx, "partner"), make_client(ctx, "partner")
    token = OAuth2Client(owner.client.client_id, owner.secret).fetch_token(
        f"{base}/oauth/token", grant_type="client_credentials"
    )
    stranger = OAuth2Client(other.client.client_id, other.secret)
    assert stranger.introspect_token(f"{base}/oauth/introspect", token=token["access_token"]).json() == {
        "active": False
    }
    stranger.revoke_token(f"{base}/oauth/revoke", token=token["access_token"])
    owner_view = (
        OAuth2Client(owner.client.client_id, owner.secret)
        .introspect_token(f"{base}/oauth/introspect", token=token["access_token"])
        .json()
    )
    assert owner_view["active"] is True


def test_key_rotation_keeps_old_tokens_valid(server: tuple[str, Context]) -> None:
    base, ctx = server
    old_token = issue_token(ctx, "steward")
    old_kid = ctx.keys.token_key.kid
    ctx.keys.rotate()
    new_token = issue_token(ctx, "steward")
    kids = [k["kid"] for k in httpx.get(f"{base}/oauth/jwks").json()["keys"]]
    assert kids[1] == old_kid
    assert kids[0] == ctx.keys.token_key.kid
    for token in (old_token, new_token):
        assert httpx.get(f"{base}{GUARDED}", headers=bearer(token)).status_code == 200


def test_login_form_posted_from_elsewhere_is_refused(server: tuple[str, Context]) -> None:
    """Login CSRF: a form without the page's double-submit token (cookie + field) signs nobody in."""
    base, ctx = server
    user = make_user(ctx, "customer")
    new = make_client(ctx, "customer", public=True, redirect_uris=[REDIRECT])
    oauth = OAuth2Client(
        client_id=new.client.client_id,
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=generate_token(48))
    page = httpx.get(url)
    fields = {k: v.replace("&amp;", "&") for k, v in _hidden_fields(page.text).items()}
    fields.update(username=user.username, password=TEST_PASSWORD, action="approve")
    forged = httpx.post(f"{base}/oauth/authorize", data=fields)  # the token but not the browser's cookie
    assert forged.status_code == 403
    assert "location" not in forged.headers
    tampered = httpx.post(f"{base}/oauth/authorize", data={**fields, "csrf_token": "x"}, cookies=page.cookies)
    assert tampered.status_code == 403
    genuine = httpx.post(f"{base}/oauth/authorize", data=fields, cookies=page.cookies)
    assert genuine.status_code == 302
