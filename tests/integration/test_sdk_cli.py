"""``dataspace remote ...`` against the real server: audit export + offline verification, job submission
with a model upload, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataspace.audit import record_event
from dataspace.cli import app
from dataspace.context import Context
from tests.factories import jobs as js
from tests.factories.identities import make_client
from tests.integration.oauth_server import running_server


@pytest.fixture
def runner() -> CliRunner:
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
            app, ["remote", "jobs", "submit", "--model", str(model), "--contract", str(contract_id), "--yes"], env=env
        )
        assert result.exit_code == 0, result.output
        assert "uploaded" in result.output
        assert "queued" in result.output
        bad = runner.invoke(app, ["remote", "jobs", "submit", "--model-id", "999", "--yes"], env=env)
    assert bad.exit_code == 1
    assert "error:" in bad.output
    assert "Traceback" not in bad.output


def test_bad_credentials_are_one_line(ctx: Context, runner: CliRunner) -> None:
    with running_server(ctx) as (base, _):
        env = {"DATASPACE_URL": base, "DATASPACE_CLIENT_ID": "nobody", "DATASPACE_CLIENT_SECRET": "wrong"}
        result = runner.invoke(app, ["remote", "audit", "export", "--out", "/dev/null"], env=env)
    assert result.exit_code == 1
    assert "invalid_client" in result.output


def test_rewards_redeem_signs_the_customer_in_through_the_browser(
    ctx: Context, runner: CliRunner, tmp_path: Path
) -> None:
    """`remote rewards redeem`: authorization code + PKCE with a loopback redirect, the login done by a
    scripted browser registered in Python's webbrowser registry, then an idempotent redemption."""
    import socket
    import sys
    import webbrowser

    from dataspace.db import utcnow
    from dataspace.points import corrections
    from dataspace.points import queries as points_queries
    from dataspace.points import rewards as points_rewards
    from dataspace.points.schemas import RewardCreate
    from tests.factories.identities import TEST_PASSWORD, make_user

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    user = make_user(ctx, "customer")
    client = make_client(ctx, "customer", public=True, redirect_uris=[f"http://127.0.0.1:{port}/callback"])
    with ctx.db.transaction() as s:
        points_rewards.create_reward(s, data=RewardCreate(key="coffee", name="Coffee voucher", cost=30, stock=5))
        corrections.post_correction(
            s, subject_id=user.subject_id, amount=100, reason="welcome", idempotency_key="welcome-1", now=utcnow()
        )
    script = Path(__file__).with_name("scripted_browser.py")
    webbrowser.register(
        "scripted", None, webbrowser.GenericBrowser([sys.executable, str(script), "%s"]), preferred=True
    )
    with running_server(ctx) as (base, _):
        env = {
            "DATASPACE_URL": base,
            "DATASPACE_CLIENT_ID": client.client.client_id,
            "DATASPACE_REDIRECT_PORT": str(port),
            "DS_TEST_USER": user.username,
            "DS_TEST_PASSWORD": TEST_PASSWORD,
        }
        result = runner.invoke(app, ["remote", "rewards", "redeem", "coffee", "--idempotency-key", "k-1"], env=env)
    assert result.exit_code == 0, result.output
    assert "balance 70" in result.output
    with ctx.db.session() as s:
        assert points_queries.get_summary(s, subject_id=user.subject_id, now=utcnow()).balance == 70


def test_jobs_submit_follow_waits_for_the_worker_and_prints_the_release(
    ctx: Context, tmp_path: Path, runner: CliRunner
) -> None:
    import threading

    js.build_world(ctx, n=30)
    contract_id = js.approved_contract(ctx)
    creds = make_client(ctx, "partner", partner_key=js.PARTNER)
    model = tmp_path / "model.onnx"
    model.write_bytes(js.logistic_regression(js.WEIGHTS, js.BIAS))
    stop = threading.Event()

    def worker() -> None:  # what the server's background job worker does
        while not stop.is_set() and ctx.jobs.run_queued() == 0:
            stop.wait(0.2)

    thread = threading.Thread(target=worker, daemon=True)
    with running_server(ctx) as (base, _):
        thread.start()
        env = {
            "DATASPACE_URL": base,
            "DATASPACE_CLIENT_ID": creds.client.client_id,
            "DATASPACE_CLIENT_SECRET": creds.secret or "",
        }
        args = [
            "remote",
            "jobs",
            "submit",
            "--model",
            str(model),
            "--contract",
            str(contract_id),
            "--follow",
            "--timeout",
            "60",
            "--yes",
        ]
        result = runner.invoke(app, args, env=env)
        stop.set()
        thread.join(10)
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    assert "this job spends epsilon 1" in result.output  # said before anything was spent
    assert "epsilon 1 (laplace" in result.output  # the DP release, not row-level results
    assert "95% noise interval" in result.output
