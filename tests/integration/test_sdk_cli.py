"""``dataspace remote ...`` against the real server: audit export + offline verification, job submission
with a model upload, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataspace.audit import record_event
from dataspace.cli import app
from dataspace.context import Context
from tests.auth_helpers import make_client
from tests.integration import jobs_support as js
from tests.integration.oauth_server import running_server


@pytest.fixture
def runner() -> CliRunner:
    from dataspace import cli_commands  # noqa: F401  (registers the commands)

    return CliRunner()


def test_audit_export_and_verify(ctx: Context, tmp_path: Path, runner: CliRunner) -> None:
    creds = make_client(ctx, "compliance")
    with ctx.db.transaction() as s:
        record_event(s, actor=None, action="test.cli", target="t:1")
    out = tmp_path / "audit.jsonl"
    with running_server(ctx) as (base, _):
        env = {
            "DATASPACE_URL": base,
            "DATASPACE_CLIENT_ID": creds.client.client_id,
            "DATASPACE_CLIENT_SECRET": creds.secret or "",
        }
        result = runner.invoke(app, ["remote", "audit", "export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output
    assert '"type":"checkpoint"' in out.read_text().splitlines()[0]


def test_jobs_submit_uploads_the_model(ctx: Context, tmp_path: Path, runner: CliRunner) -> None:
    js.build_world(ctx, n=30)
    contract_id = js.approved_contract(ctx)
    creds = make_client(ctx, "partner", partner_key=js.PARTNER)
    model = tmp_path / "model.onnx"
    model.write_bytes(js.logistic_regression(js.WEIGHTS, js.BIAS))
    with running_server(ctx) as (base, _):
        env = {
            "DATASPACE_URL": base,
            "DATASPACE_CLIENT_ID": creds.client.client_id,
            "DATASPACE_CLIENT_SECRET": creds.secret or "",
        }
        result = runner.invoke(
            app, ["remote", "jobs", "submit", "--model", str(model), "--contract", str(contract_id)], env=env
        )
        assert result.exit_code == 0, result.output
        assert "uploaded" in result.output
        assert "queued" in result.output
        bad = runner.invoke(app, ["remote", "jobs", "submit", "--model-id", "999"], env=env)
    assert bad.exit_code == 1
    assert "error:" in bad.output
    assert "Traceback" not in bad.output


def test_bad_credentials_are_one_line(ctx: Context, runner: CliRunner) -> None:
    with running_server(ctx) as (base, _):
        env = {"DATASPACE_URL": base, "DATASPACE_CLIENT_ID": "nobody", "DATASPACE_CLIENT_SECRET": "wrong"}
        result = runner.invoke(app, ["remote", "audit", "export", "--out", "/dev/null"], env=env)
    assert result.exit_code == 1
    assert "invalid_client" in result.output
