"""The demo writes every role's credentials to one file in its data dir (mode 0600) and prints its path: the
browser accounts work on the page of their role (stewards on the steward console), the partner secrets are
real, and the command-line sign-in clients exist."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dataspace.auth import login
from dataspace.auth.models import OAuthClient
from dataspace.auth.web_clients import ensure_web_clients
from dataspace.context import Context
from dataspace.demo.build import build_demo
from dataspace.demo.credentials import write_credentials


def _check_file(path: Path) -> dict:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text(encoding="utf-8"))
    roles = data["roles"]
    assert set(roles) == {"customer", "partner", "steward", "compliance"}
    assert roles["steward"]["app"].endswith("/steward/")
    assert {a["username"] for a in roles["steward"]["browser"]} >= {"steward", "steward2"}
    assert {a["username"] for a in roles["compliance"]["browser"]} >= {"auditor"}
    assert {a["username"] for a in roles["customer"]["browser"]} >= {"alice", "bob", "chen"}
    assert roles["partner"]["browser"], "a partner analyst for the partner view"
    partner_ids = {
        c["env"]["DATASPACE_CLIENT_ID"] for c in roles["partner"]["cli"] if "DATASPACE_CLIENT_SECRET" in c["env"]
    }
    assert {"harbor_insurance", "voltgrid"} <= partner_ids
    for role, client in (("steward", "steward-cli"), ("compliance", "compliance-cli"), ("customer", "customer-cli")):
        assert client in {c["env"]["DATASPACE_CLIENT_ID"] for c in roles[role]["cli"]}
    return data


def test_credentials_file_lets_every_role_in(ctx: Context) -> None:
    accounts = build_demo(ctx, customers=60, progress=lambda _m: None)
    ensure_web_clients(ctx.settings, ctx.db)
    path = write_credentials(ctx, accounts)
    assert path.parent == ctx.settings.data_dir
    data = _check_file(path)
    with ctx.db.transaction() as s:
        clients = {c.client_id: c for c in s.scalars(select(OAuthClient))}
        assert clients["steward-console"].role == "steward"
        assert clients["steward-cli"].role == "steward"
        assert clients["compliance-cli"].role == "compliance"
        assert "http://127.0.0.1:8765/callback" in clients["steward-cli"].redirect_uris
        for role in ("steward", "compliance", "customer"):
            account = data["roles"][role]["browser"][0]
            result = login.sign_in(
                session=s, username=account["username"], password=account["password"], address="127.0.0.1"
            )
            assert result.outcome is login.Outcome.OK, role
            assert result.user is not None
            assert result.user.role == role
    # Rewriting keeps it private even if someone loosened the mode meanwhile.
    path.chmod(0o644)
    assert stat.S_IMODE(write_credentials(ctx, accounts).stat().st_mode) == 0o600


def test_dataspace_demo_prints_where_the_credentials_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataspace.cli import app, console

    for name in list(os.environ):
        if name.startswith("DATASPACE_") and not name.startswith("DATASPACE_TEST"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATASPACE_DATA_DIR", str(tmp_path / "demo"))
    monkeypatch.setattr(console, "width", 300)
    result = CliRunner().invoke(app, ["demo", "--customers", "40", "--no-serve"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "demo" / "demo-credentials.json"
    assert f"mode 0600): {path}" in result.output
    assert "Steward console:" in result.output
    _check_file(path)
