"""The steward's server-side commands: ``dataspace contracts|models|budgets|jobs``. The two-person rule holds
on the command line as in the API (the same steward twice does not count; a non-steward cannot decide), and
every decision names the steward in the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dataspace.agreements import contracts
from dataspace.agreements.models import Contract, PartnerModel, PrivacyBudget
from dataspace.context import Context
from dataspace.jobs import service as jobs
from dataspace.jobs import uploads
from dataspace.keys import save_key_file
from dataspace.tlog.models import TLogEntry
from tests.factories import jobs as js
from tests.factories.identities import make_user

PYTHON_MODULE = b"def score(rows):\n    return [{'label': 'standard', 'value': 1.0} for _ in rows]\n"


@pytest.fixture
def cli(ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from dataspace.cli import app, console

    monkeypatch.setattr(console, "width", 200)  # rich tables: one line per row

    save_key_file(tmp_path / "keys.json", ctx.keys)
    monkeypatch.setenv("DATASPACE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATASPACE_DATABASE_URL", ctx.db.url)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return " ".join(result.output.split())

    return run


def _sensitive(ctx: Context) -> int:
    js.load_demo_catalog(ctx)
    return js.propose(
        ctx,
        features=[
            *js.FEATURES,
            {"field": "health_condition", "transform": "group", "groups": {"c": ["asthma", "diabetes"]}},
        ],
    )


def test_two_stewards_approve_a_sensitive_contract(ctx: Context, cli: Any) -> None:
    contract_id = _sensitive(ctx)
    for name in ("ann", "ben"):
        make_user(ctx, "steward", username=name)
    make_user(ctx, "compliance", username="carl")

    listed = cli("contracts", "list", "--status", "proposed")
    assert "yes (2 stewards)" in listed
    out = cli("contracts", "approve", str(contract_id), "--steward", "ann")
    assert "still needs 1 more approval(s) from a different steward" in out
    # The same steward twice does not count; neither does someone who is not a steward, nor an unknown name.
    assert "already approved" in cli("contracts", "approve", str(contract_id), "--steward", "ann", code=1)
    assert "not an enabled steward" in cli("contracts", "approve", str(contract_id), "--steward", "carl", code=1)
    assert "not an enabled steward" in cli("contracts", "approve", str(contract_id), "--steward", "nobody", code=1)
    with ctx.db.session() as s:
        assert s.get(Contract, contract_id).status == "proposed"  # type: ignore[union-attr]
    out = cli("contracts", "approve", str(contract_id), "--steward", "ben")
    assert f"contract {contract_id} approved: approved by ann, ben" in out
    with ctx.db.session() as s:
        actions = set(s.execute(select(TLogEntry.actor, TLogEntry.action).where(TLogEntry.log == "audit")))
    assert {("steward:ann", "contract.approval_recorded"), ("steward:ben", "contract.approved")} <= actions


def test_reject_contract_and_review_models_and_budgets(ctx: Context, cli: Any) -> None:
    js.build_world(ctx, n=30)
    make_user(ctx, "steward", username="ann")
    rejected = js.propose(ctx)
    assert f"contract {rejected} rejected" in cli(
        "contracts", "reject", str(rejected), "--steward", "ann", "--reason", "too broad"
    )
    cli("contracts", "approve", str(rejected), "--steward", "ann", code=1)  # rejected for good
    with ctx.db.session() as s:
        assert s.get(Contract, rejected).status == "rejected"  # type: ignore[union-attr]

    contract_id = js.approved_contract(ctx)
    with ctx.db.transaction() as s:
        kept = uploads.upload(
            s, principal=js.partner_principal(ctx), contract_id=contract_id, kind="python", data=PYTHON_MODULE
        ).id
        refused = uploads.upload(
            s, principal=js.partner_principal(ctx), contract_id=contract_id, kind="python", data=PYTHON_MODULE
        ).id
    review = cli("models", "review", str(kept))
    assert "def score(rows):" in review
    assert "passed: utf8_compiles" in review
    assert "approvals: none of 1 needed" in review
    assert f"model {kept} approved (1 of 1 approvals)" in cli("models", "approve", str(kept), "--steward", "ann")
    assert f"model {refused} rejected" in cli("models", "reject", str(refused), "--steward", "ann")
    assert "only a Python model awaiting review" in cli("models", "reject", str(kept), "--steward", "ann", code=1)
    with ctx.db.session() as s:
        assert s.get(PartnerModel, kept).status == "approved"  # type: ignore[union-attr]
        assert s.get(PartnerModel, refused).status == "rejected"  # type: ignore[union-attr]
        assert not uploads.is_runnable(s.get(PartnerModel, refused))  # type: ignore[arg-type]
    listed = cli("models", "list")
    assert "python │ approved" in listed
    assert "python │ rejected" in listed

    out = cli("budgets", "set", js.PARTNER, js.PURPOSE, "4.5", "--steward", "ann")
    assert "total ε 4.5" in out
    assert "between 0 and 1000" in cli("budgets", "set", js.PARTNER, js.PURPOSE, "5000", "--steward", "ann", code=1)
    with ctx.db.session() as s:
        budget = s.scalar(select(PrivacyBudget).where(PrivacyBudget.purpose_key == js.PURPOSE))
        assert budget is not None
        assert budget.micro_epsilon_total == 4_500_000
    assert js.PARTNER in cli("budgets", "list")

    with ctx.db.transaction() as s:
        assert contracts.get(s, contract_id=contract_id).status == "approved"
    spare = js.approved_contract(ctx)
    assert f"contract {spare} revoked" in cli("contracts", "revoke", str(spare), "--steward", "ann")
    assert "only an approved contract" in cli("contracts", "revoke", str(spare), "--steward", "ann", code=1)
    model_id = js.upload_onnx(ctx, contract_id)
    with ctx.db.transaction() as s:
        job_id = jobs.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id
    assert ctx.jobs.run_job(job_id).status == "succeeded"
    listed = cli("jobs", "list", "--status", "succeeded")
    assert f"│ {job_id} │ {js.PARTNER} │ {contract_id} │ succeeded │" in listed
    assert js.PARTNER not in cli("jobs", "list", "--status", "failed")
