"""``dataspace remote`` for partners (contracts, models, jobs, budget) and compliance officers (actions,
requests, records of processing as CSV) against the real server; a job is submitted only after the person
has been told what it spends, and following or reading results spends nothing more."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from dataspace.agreements.models import PrivacyBudget
from dataspace.cli import app
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.jobs.models import Job
from tests.factories import jobs as js
from tests.factories.identities import make_client
from tests.integration.oauth_server import running_server


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _env(ctx: Context, base: str, role: str, **kw: str) -> dict[str, str]:
    creds = make_client(ctx, role, **kw)
    return {
        "DATASPACE_URL": base,
        "DATASPACE_CLIENT_ID": creds.client.client_id,
        "DATASPACE_CLIENT_SECRET": creds.secret or "",
    }


def _jobs(ctx: Context) -> int:
    with ctx.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def _spent(ctx: Context) -> int:
    with ctx.db.session() as s:
        return int(sum(s.scalars(select(PrivacyBudget.micro_epsilon_spent))))


def test_partner_self_service_from_the_command_line(ctx: Context, tmp_path: Path, runner: CliRunner) -> None:
    js.build_world(ctx, n=45)
    contract_id = js.approved_contract(ctx)
    model = tmp_path / "model.onnx"
    model.write_bytes(js.logistic_regression(js.WEIGHTS, js.BIAS))
    proposal = tmp_path / "proposal.json"
    proposal.write_text(
        json.dumps(
            {
                "purpose": js.PURPOSE,
                "title": "renewal offers",
                "features": [{"field": "age", "transform": "bin", "edges": [30, 45, 60]}],
                "decision_schema": {"labels": ["standard", "premium"]},
                "k_min": 10,
                "epsilon_per_release": 0.5,
                "valid_until": (utcnow() + timedelta(days=90)).isoformat(),
            }
        )
    )
    with running_server(ctx) as (base, _):
        env = _env(ctx, base, "partner", partner_key=js.PARTNER)

        fields = runner.invoke(app, ["remote", "contracts", "fields"], env=env)
        assert fields.exit_code == 0, fields.output
        assert "age (integer): " in fields.output
        assert "bin" in fields.output
        assert "Shared with partners only as" in fields.output

        proposed = runner.invoke(app, ["remote", "contracts", "propose", str(proposal)], env=env)
        assert proposed.exit_code == 0, proposed.output
        assert "proposed" in proposed.output
        listed = runner.invoke(app, ["remote", "contracts", "list"], env=env)
        assert "k=10 epsilon/job=0.5" in listed.output
        assert "age:bin" in listed.output

        uploaded = runner.invoke(
            app, ["remote", "models", "upload", str(model), "--contract", str(contract_id)], env=env
        )
        assert uploaded.exit_code == 0, uploaded.output
        assert " ready " in uploaded.output
        assert "feature_count: 3" in uploaded.output
        model_id = int(uploaded.stdout.split()[1])
        assert f"contract {contract_id}" in runner.invoke(app, ["remote", "models", "list"], env=env).output

        # Saying no (or nothing) spends nothing and submits nothing.
        before, spent = _jobs(ctx), _spent(ctx)
        declined = runner.invoke(app, ["remote", "jobs", "submit", "--model-id", str(model_id)], env=env, input="n\n")
        assert declined.exit_code == 1
        assert "this job spends epsilon 1 of your 'insurance_offer' privacy budget (10 left)" in declined.output
        assert "not submitted" in declined.output
        assert (_jobs(ctx), _spent(ctx)) == (before, spent)

        submitted = runner.invoke(app, ["remote", "jobs", "submit", "--model-id", str(model_id)], env=env, input="y\n")
        assert submitted.exit_code == 0, submitted.output
        assert "queued" in submitted.output
        job_id = int(submitted.stdout.split("job ")[-1].split()[0])
        assert _jobs(ctx) == before + 1
        assert ctx.jobs.run_job(job_id).status == "succeeded"
        spent_after_submit = _spent(ctx)

        followed = runner.invoke(app, ["remote", "jobs", "status", str(job_id), "--follow", "--timeout", "60"], env=env)
        assert followed.exit_code == 0, followed.output
        assert "succeeded" in followed.output
        assert "+/- 3.0" in followed.output  # epsilon 1: ln(20) / 1
        results = runner.invoke(app, ["remote", "jobs", "results", str(job_id)], env=env)
        assert results.stdout.split("\n", 1)[1] == followed.stdout.split("\n", 2)[2]  # the same stored numbers
        assert _spent(ctx) == spent_after_submit  # following and reading results spend nothing more
        assert f"{job_id}" in runner.invoke(app, ["remote", "jobs", "list"], env=env).output
        budget = runner.invoke(app, ["remote", "budget"], env=env)
        assert "insurance_offer" in budget.output
        assert "9 of 10 left (1 spent)" in budget.output


def test_compliance_actions_requests_and_records_csv(ctx: Context, tmp_path: Path, runner: CliRunner) -> None:
    js.build_world(ctx, n=30)
    js.approved_contract(ctx)
    out = tmp_path / "records.csv"
    with running_server(ctx) as (base, _):
        env = _env(ctx, base, "compliance")
        actions = runner.invoke(app, ["remote", "audit", "actions"], env=env)
        assert actions.exit_code == 0, actions.output
        assert "contract.approved" in actions.stdout.split() or "contract.proposed" in actions.stdout.split()
        requests = runner.invoke(app, ["remote", "audit", "requests"], env=env)
        assert requests.exit_code == 0, requests.output
        records = runner.invoke(app, ["remote", "audit", "records", "--csv", str(out)], env=env)
        assert records.exit_code == 0, records.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {"controller", "dpo", "international_transfers", "safeguards", "legal_basis"} <= set(rows[0])
    offer = next(r for r in rows if r["purpose"] == js.PURPOSE)
    assert "Age" in offer["fields"] or "age" in offer["fields"]
    assert offer["safeguards"]
    assert offer["international_transfers"]
