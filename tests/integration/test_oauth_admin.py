"""Policy changes by stewards, the external OIDC issuer, provisioning rules, and the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey
from typer.testing import CliRunner

from dataspace.app import create_app
from dataspace.auth import service
from dataspace.cli import app as cli_app
from dataspace.context import Context
from dataspace.errors import InvalidInput
from tests.factories.identities import bearer, issue_token, make_subject


def test_steward_changes_policy_and_it_takes_effect(ctx: Context) -> None:
    compliance, customer = (issue_token(ctx, r) for r in ("compliance", "customer"))
    # Policy changes need the ``policy`` scope and a recent sign-in: a steward person, just signed in.
    steward = issue_token(ctx, "steward", person=True)
    with TestClient(create_app(ctx)) as client:
        rules = client.get("/v1/admin/policies", headers=bearer(compliance)).json()
        assert {"ptype": "p", "role": "customer", "obj": "catalog", "act": "read"} in rules
        # Compliance is read-only, whatever the policy says.
        body = {"role": "customer", "obj": "catalog", "act": "read"}
        assert client.post("/v1/admin/policies", json=body, headers=bearer(compliance)).status_code == 403

        assert client.get("/v1/catalog/fields", headers=bearer(customer)).status_code == 200
        params = {"role": "customer", "obj": "catalog", "act": "read"}
        assert client.delete("/v1/admin/policies", params=params, headers=bearer(steward)).status_code == 204
        assert client.get("/v1/catalog/fields", headers=bearer(customer)).status_code == 403
        assert client.post("/v1/admin/policies", json=body, headers=bearer(steward)).status_code == 201
        assert client.get("/v1/catalog/fields", headers=bearer(customer)).status_code == 200

        assert client.post("/v1/admin/policies", json=body, headers=bearer(steward)).status_code == 409
        bad = {"role": "root", "obj": "catalog", "act": "read"}
        assert client.post("/v1/admin/policies", json=bad, headers=bearer(steward)).status_code == 422


def test_scope_narrowed_token_is_refused_outside_its_scope(ctx: Context) -> None:
    token = issue_token(ctx, "customer", scopes=["consents"])
    with TestClient(create_app(ctx)) as client:
        assert client.get("/v1/catalog/fields", headers=bearer(token)).status_code == 403


def test_provisioning_rules(ctx: Context) -> None:
    with ctx.db.transaction() as session:
        with pytest.raises(InvalidInput):
            service.create_user(session=session, username="c", password="x" * 12, role="customer")
        with pytest.raises(InvalidInput):
            service.create_user(session=session, username="s", password="short", role="steward")
        with pytest.raises(InvalidInput):
            service.create_client(session=session, role="partner")  # no partner
        with pytest.raises(InvalidInput):
            service.create_client(session=session, role="steward", public=True)  # no redirect URI
        with pytest.raises(InvalidInput):
            service.create_client(
                session=session, role="steward", public=True, redirect_uris=["http://evil.example/cb"]
            )  # http off loopback
        new = service.create_client(session=session, role="steward")
        assert new.secret
        assert new.client.secret_hash
        assert new.secret not in new.client.secret_hash
        assert new.client.check_client_secret(new.secret)
        assert not new.client.check_client_secret(new.secret + "x")


class _JWKSHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def external_issuer() -> Iterator[tuple[str, RSAKey]]:
    key = RSAKey.generate_key(2048, parameters={"kid": "ext-1"})
    handler = type("H", (_JWKSHandler,), {"body": json.dumps({"keys": [key.as_dict(private=False)]}).encode()})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks", key
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_external_oidc_issuer_tokens(ctx: Context, external_issuer: tuple[str, RSAKey]) -> None:
    url, key = external_issuer
    settings = ctx.settings.model_copy(
        update={
            "external_issuer": "https://idp.example",
            "external_jwks_url": url,
            "external_audience": "dataspace-api",
        }
    )
    ext = Context(settings=settings, db=ctx.db, keys=ctx.keys)

    def token(**claims: object) -> str:
        base = {
            "iss": "https://idp.example",
            "aud": "dataspace-api",
            "sub": "jane",
            "exp": 4102444800,
            "roles": ["employee", "compliance"],
            "scope": "admin audit",
        }
        return jwt.encode({"alg": "RS256", "kid": "ext-1"}, {**base, **claims}, key)

    with TestClient(create_app(ext)) as client:
        assert client.get("/v1/admin/policies", headers=bearer(token())).status_code == 200
        assert client.get("/v1/admin/policies", headers=bearer(token(aud="other"))).status_code == 401
        assert client.get("/v1/admin/policies", headers=bearer(token(iss="https://evil"))).status_code == 401
        assert client.get("/v1/admin/policies", headers=bearer(token(exp=1000))).status_code == 401
        assert client.get("/v1/admin/policies", headers=bearer(token(roles=["employee"]))).status_code == 401
        # Fail closed: a token that names no scope (or another one) holds none.
        assert client.get("/v1/admin/policies", headers=bearer(token(scope=None))).status_code == 403
        assert client.get("/v1/admin/policies", headers=bearer(token(scope="audit"))).status_code == 403
        # A customer from the external issuer has no data subject here: refused.
        assert client.get("/v1/catalog/fields", headers=bearer(token(roles=["customer"]))).status_code == 403
        # Our own tokens still work alongside.
        assert client.get("/v1/admin/policies", headers=bearer(issue_token(ext, "steward"))).status_code == 200


def test_cli_provisioning_and_key_rotation(ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataspace.keys import create_key_file, load_key_file

    key_file = tmp_path / "keys.json"
    create_key_file(key_file)
    monkeypatch.setenv("DATASPACE_DATABASE_URL", ctx.db.url)
    monkeypatch.setenv("DATASPACE_KEY_FILE", str(key_file))
    runner = CliRunner()
    result = runner.invoke(cli_app, ["clients", "create", "--role", "steward", "--name", "ops"])
    assert result.exit_code == 0, result.output
    assert "client_secret:" in result.output
    subject = make_subject(ctx)
    result = runner.invoke(
        cli_app, ["users", "create", "ann", "--role", "customer", "--subject-id", str(subject), "--generate-password"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli_app, ["users", "create", "bob", "--role", "customer", "--generate-password"])
    assert result.exit_code == 1
    assert "must name its data subject" in result.output
    before = [k.kid for k in load_key_file(key_file).token_keys]
    assert runner.invoke(cli_app, ["keys", "rotate"]).exit_code == 0
    after = [k.kid for k in load_key_file(key_file).token_keys]
    assert after[1:] == before
    assert len(after) == 2


def test_running_server_picks_up_rotated_keys(ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dataspace keys rotate`` on the key file a server runs on: within one reload the server issues tokens
    and signs receipts with the new keys and still accepts tokens signed with the old ones; a broken file
    keeps the keys in use."""
    from dataspace.background import tasks
    from dataspace.keys import create_key_file

    key_file = tmp_path / "keys.json"
    create_key_file(key_file)
    monkeypatch.setenv("DATASPACE_DATABASE_URL", ctx.db.url)
    monkeypatch.setenv("DATASPACE_KEY_FILE", str(key_file))
    served = Context.open(ctx.settings.model_copy(update={"key_file": key_file}))
    try:
        (reload_task,) = [t for t in tasks(served) if t.name == "key-reload"]
        assert served.reload_keys() is False  # unchanged file: nothing to do
        old_token = issue_token(served, "steward")
        old_kid = served.keys.signing_key.kid
        with TestClient(create_app(served)) as client:
            assert CliRunner().invoke(cli_app, ["keys", "rotate"]).exit_code == 0
            assert list(client.get("/v1/keys/receipts").json()) == [old_kid]  # not reloaded yet
            reload_task.run()  # what the background task does every few seconds
            new_kid = served.keys.signing_key.kid
            assert new_kid != old_kid
            assert list(client.get("/v1/keys/receipts").json()) == [new_kid, old_kid]
            jwks = [k["kid"] for k in client.get("/oauth/jwks").json()["keys"]]
            assert jwks[0] == served.keys.token_key.kid
            assert len(jwks) == 2
            new_token = issue_token(served, "steward")
            for token in (old_token, new_token):
                assert client.get("/v1/catalog/fields", headers=bearer(token)).status_code == 200

            key_file.write_text("{not json")  # a broken file is reported and ignored
            assert served.reload_keys() is False
            assert served.keys.signing_key.kid == new_kid
            assert client.get("/v1/catalog/fields", headers=bearer(new_token)).status_code == 200
    finally:
        served.close()
