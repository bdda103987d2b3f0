"""Stewards through the real server with the demo's ``steward-cli`` sign-in client (authorization code +
PKCE, loopback redirect, as the SDK and ``dataspace remote`` do): two stewards approve a sensitive contract,
the job queue, a Python model's review and rejection, the budgets and the request log; a customer cannot sign
in through the steward's client, and a partner gets none of the steward routes."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest

from clients.sdk import AuthorizationCode, ClientCredentials, Forbidden, PartnerClient, StewardClient
from dataspace.auth.web_clients import ensure_web_clients
from dataspace.context import Context
from dataspace.jobs import uploads
from tests.factories import jobs as js
from tests.factories.identities import TEST_PASSWORD, make_client, make_user
from tests.integration.oauth_server import running_server
from tests.integration.sdk_support import cli_client_on, free_port, login_as

PYTHON_MODULE = b"def score(rows):\n    return [{'label': 'standard', 'value': 1.0} for _ in rows]\n"


def test_two_stewards_and_the_steward_routes(ctx: Context) -> None:
    js.build_world(ctx, n=30)
    sensitive = js.propose(
        ctx,
        features=[
            *js.FEATURES,
            {"field": "health_condition", "transform": "group", "groups": {"c": ["asthma", "other"]}},
        ],
    )
    contract_id = js.approved_contract(ctx)
    with ctx.db.transaction() as s:
        model_id = uploads.upload(
            s, principal=js.partner_principal(ctx), contract_id=contract_id, kind="python", data=PYTHON_MODULE
        ).id
    for name in ("ann", "ben"):
        make_user(ctx, "steward", username=name)
    port = free_port()
    partner = make_client(ctx, "partner", partner_key=js.PARTNER)
    with running_server(ctx) as (base, served):
        ensure_web_clients(served.settings, served.db)
        cli_client_on(served, "steward-cli", port)

        def steward(name: str) -> StewardClient:
            creds = AuthorizationCode(
                "steward-cli", port=port, scope="catalog admin audit", open_browser=login_as(name), timeout=20
            )
            return StewardClient(base, creds)

        with steward("ann") as ann:
            waiting = {c.id: c for c in ann.contracts(status="proposed")}
            assert waiting[sensitive].partner_key == js.PARTNER
            assert waiting[sensitive].required_approvals == 2
            first = ann.approve_contract(sensitive)
            assert (first.status, first.approvals) == ("proposed", ["steward:ann"])
            review = ann.model_review(model_id)
            assert "def score(rows):" in (review.source or "")
            assert {c["check"] for c in review.checks} == {"size", "utf8_compiles", "feature_names"}
            rejected = ann.reject_model(model_id, reason="reads too much")
            assert rejected.model.status == "rejected"
            assert ann.set_budget(partner=js.PARTNER, purpose=js.PURPOSE, epsilon_total=12).epsilon_total == 12
            budgets = ann.budgets()
            assert any(b.partner_key == js.PARTNER and b.purpose == js.PURPOSE for b in budgets)
            assert ann.jobs() == []
            assert ann.requests_log() == []
        with steward("ben") as ben:
            second = ben.approve_contract(sensitive)
            assert second.status == "approved"
            assert second.approvals == ["steward:ann", "steward:ben"]

        with PartnerClient(base, ClientCredentials(partner.client.client_id, partner.secret or "")) as p:
            for method, path in (
                ("GET", "/v1/jobs"),
                ("GET", f"/v1/models/{model_id}/review"),
                ("GET", "/v1/privacy-budgets"),
            ):
                with pytest.raises(Forbidden):
                    p.request(method, path)
            with pytest.raises(Forbidden):
                p.request("POST", f"/v1/models/{model_id}/reject", json={})


def test_a_customer_cannot_sign_in_through_the_steward_client(ctx: Context) -> None:
    user = make_user(ctx, "customer", username="not-a-steward")
    with running_server(ctx) as (base, served):
        ensure_web_clients(served.settings, served.db)
        with httpx.Client() as browser:
            page = browser.get(
                base + "/oauth/authorize",
                params={
                    "response_type": "code",
                    "client_id": "steward-console",
                    "redirect_uri": base + "/steward/",
                    "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                    "code_challenge_method": "S256",
                    "state": "s",
                },
            )
            assert page.status_code == 200, page.text
            fields = {
                k: unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
            }
            answer = browser.post(
                base + "/oauth/authorize",
                data={**fields, "username": user.username, "password": TEST_PASSWORD, "action": "approve"},
            )
        assert answer.status_code == 403
        assert "This account cannot sign in to this application." in answer.text
        assert "location" not in answer.headers


def test_remote_steward_commands_sign_in_as_the_steward(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dataspace remote steward ...`` with DATASPACE_CLIENT_ID=steward-cli: the browser sign-in (here the login
    form posted by a function), then the same two-person rule: the first approval leaves the contract waiting."""
    from functools import partial

    from typer.testing import CliRunner

    from clients.cli import _common as remote_cli
    from dataspace.cli import app

    js.build_world(ctx, n=30)
    sensitive = js.propose(
        ctx,
        features=[
            *js.FEATURES,
            {"field": "health_condition", "transform": "group", "groups": {"c": ["asthma", "other"]}},
        ],
    )
    for name in ("ann", "ben"):
        make_user(ctx, "steward", username=name)
    port = free_port()
    monkeypatch.setattr(remote_cli.console, "width", 200)
    runner = CliRunner()
    with running_server(ctx) as (base, served):
        ensure_web_clients(served.settings, served.db)
        cli_client_on(served, "steward-cli", port)
        monkeypatch.setenv("DATASPACE_URL", base)
        monkeypatch.setenv("DATASPACE_CLIENT_ID", "steward-cli")
        monkeypatch.delenv("DATASPACE_CLIENT_SECRET", raising=False)
        monkeypatch.setenv("DATASPACE_REDIRECT_PORT", str(port))

        def as_steward(name: str, *args: str) -> str:
            monkeypatch.setattr(
                remote_cli, "AuthorizationCode", partial(AuthorizationCode, open_browser=login_as(name), timeout=20)
            )
            result = runner.invoke(app, ["remote", "steward", *args])
            assert result.exit_code == 0, result.output
            return " ".join(result.output.split())

        listed = as_steward("ann", "contracts", "--status", "proposed")
        assert f"{sensitive} {js.PARTNER} / {js.PURPOSE} SENSITIVE" in listed
        assert "still needs 2 more" in listed
        first = as_steward("ann", "approve", str(sensitive))
        assert (
            f"contract {sensitive}: awaiting approval: approved by ann; still needs 1 more from a different steward"
            in first
        )
        second = as_steward("ben", "approve", str(sensitive))
        assert f"contract {sensitive}: approved; approved by ann, ben" in second
        assert "of 3 left" in as_steward("ben", "set-budget", js.PARTNER, js.PURPOSE, "3")
        assert js.PARTNER in as_steward("ben", "budgets")
