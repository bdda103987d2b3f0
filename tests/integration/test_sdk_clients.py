"""The SDK against the real server (uvicorn on a free port): client credentials, authorization code +
PKCE through the login form with a loopback redirect, refresh, typed errors, pagination, signed exports."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import httpx
import pytest

from clients.sdk import (
    AuthorizationCode,
    ClientCredentials,
    ComplianceClient,
    CustomerClient,
    Forbidden,
    InvalidInput,
    NotFound,
    StewardClient,
)
from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.tlog.log import verifier_keys
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import TEST_PASSWORD, make_client, make_user
from tests.integration.oauth_server import running_server
from tests.integration.sdk_support import free_port, login_as
from transparency.export import verify_export


def test_client_credentials_pagination_and_signed_export(ctx: Context, tmp_path: Path) -> None:
    creds = make_client(ctx, "compliance")
    with ctx.db.transaction() as s:
        for i in range(7):
            record_event(s, actor=None, action="test.sdk", target=f"t:{i}")
    with (
        running_server(ctx) as (base, served),
        ComplianceClient(base, ClientCredentials(creds.client.client_id, creds.secret or "")) as client,
    ):
        events = list(client.events(action="test.sdk", limit=3))
        assert sorted(e["target"] for e in events) == [f"t:{i}" for i in range(7)]  # newest first, 3 pages
        cp = client.checkpoint()
        out = tmp_path / "audit.jsonl"
        assert client.export(out) > 0
        report = verify_export(out, cp.verifier_keys)
        assert report.ok, report.summary()
        assert report.entries >= 7
        assert cp.verifier_keys == verifier_keys(served.settings, served.keys)
        with pytest.raises(InvalidInput) as bad:
            client.get("/v1/audit/events", log="nope")
        assert bad.value.status == 422
        assert bad.value.code == "invalid_input"
        with pytest.raises(Forbidden):
            client.request("POST", "/v1/rewards", json={"key": "x", "name": "x", "cost": 1, "stock": 1})


def test_token_is_obtained_again_after_revocation(ctx: Context) -> None:
    creds = make_client(ctx, "steward")
    with (
        running_server(ctx) as (base, _),
        StewardClient(base, ClientCredentials(creds.client.client_id, creds.secret or "")) as client,
    ):
        assert client.rewards() == []
        first = client.token
        assert first is not None
        client.revoke()  # the server now refuses the old token; the next call gets a new one
        assert client.rewards() == []
        assert client.token is not None
        assert client.token.access_token != first.access_token
        with pytest.raises(NotFound) as missing:
            client.request("PATCH", "/v1/rewards/nope", json={"name": "x"})
        assert missing.value.code == "not_found"


def test_authorization_code_with_pkce_and_refresh(ctx: Context) -> None:
    load_demo_catalog(ctx)
    user = make_user(ctx, "customer", username="sdk-customer")
    port = free_port()
    make_client(ctx, "customer", public=True, client_id="sdk-cli", redirect_uris=[f"http://127.0.0.1:{port}/callback"])
    with running_server(ctx) as (base, _):
        creds = AuthorizationCode("sdk-cli", port=port, open_browser=login_as(user.username), timeout=20)
        with CustomerClient(base, creds) as client:
            assert client.points().balance == 0
            matrix = client.consents()
            assert {d["key"] for d in client.manual()} == {"identity", "behaviour", "assets"}
            token = client.token
            assert token is not None
            assert token.refresh_token
            refreshed = client._access_token(force_refresh=True)  # the refresh grant, no browser involved
            assert refreshed != token.access_token
            partner = matrix.partners[0]["key"]
            change = client.grant(purpose="insurance_offer", field="age", partner=partner)
            assert client.receipt(change.receipt_id)["signature"]
            client.withdraw(change.grant.id)
            assert sorted(e.kind for e in client.consent_history()) == ["granted", "withdrawn"]
            with pytest.raises(InvalidInput):
                client.grant(purpose="insurance_offer")  # neither a field nor a dimension


def test_sdk_steps_up_for_erasure_when_the_sign_in_is_too_old(ctx: Context) -> None:
    """RFC 9470 in the SDK: erasure with a token from a sign-in older than ``reauth_seconds`` gets 401
    ``insufficient_user_authentication``; the SDK signs in again with prompt=login and max_age, then retries."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from dataspace.auth.models import AuthorizationCode as CodeRow

    user = make_user(ctx, "customer", username="sdk-eraser")
    port = free_port()
    make_client(ctx, "customer", public=True, client_id="sdk-cli", redirect_uris=[f"http://127.0.0.1:{port}/callback"])
    opened: list[str] = []

    def open_browser(url: str) -> None:
        opened.append(url)
        with httpx.Client() as browser:
            page = browser.get(url)
            fields = {
                k: unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
            }
            answer = browser.post(
                url.split("?", maxsplit=1)[0],
                data={**fields, "username": user.username, "password": TEST_PASSWORD, "action": "approve"},
            )
            assert answer.status_code == 302, answer.text
            if len(opened) == 1:  # the first sign-in happened "an hour ago" (the code is made at sign-in)
                with ctx.db.transaction() as session:
                    row = session.scalars(select(CodeRow).order_by(CodeRow.id.desc())).first()
                    assert row is not None
                    session.execute(
                        update(CodeRow)
                        .where(CodeRow.id == row.id)
                        .values(created_at=row.created_at - timedelta(hours=1))
                    )
            browser.get(answer.headers["location"])

    with running_server(ctx) as (base, _):
        creds = AuthorizationCode("sdk-cli", port=port, scope="consents erase", open_browser=open_browser, timeout=20)
        with CustomerClient(base, creds) as client:
            assert client.token is None
            client.consents()  # everyday actions do not care how old the sign-in is
            assert len(opened) == 1
            result = client.erase(confirm="erase my data")
            assert result["erased"] is True
    assert len(opened) == 2
    assert "prompt=login" in opened[1]
    assert f"max_age={ctx.settings.reauth_seconds}" in opened[1]
    assert "prompt" not in opened[0]
