"""The SDK remembers the last verified checkpoint of each log and catches an operator that forks its log
(another tree at the same size, or one the remembered tree is not a prefix of, re-signed with the operator's
own key) or rolls it back: against the real server (uvicorn), with the log rewritten in the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from clients.sdk import (
    CheckpointMemory,
    CheckpointRejected,
    ComplianceClient,
    CustomerClient,
    LogInconsistent,
    StaticToken,
)
from dataspace.context import Context
from dataspace.tlog import log as tlog
from dataspace.usage import UsageEntry, record_usage
from dataspace.witness import load_or_create_key
from tests.factories.identities import issue_token, make_subject
from tests.integration.oauth_server import running_server
from transparency.cosign import WitnessPolicy
from transparency.note import open_checkpoint


def _uses(ctx: Context, subject: int, n: int, tag: str) -> None:
    with ctx.db.transaction() as s:
        record_usage(
            s, [UsageEntry(i + 1, subject, ("income",), "acme", "insurance.offer", f"{tag}-{i}") for i in range(n)]
        )
    tlog.sequence(ctx.settings, ctx.db, ctx.keys, "usage")


def _rewrite_history(ctx: Context) -> None:
    """What a dishonest operator does: throw the usage log away (keeping its key) to build another one."""
    with ctx.db.transaction() as s:
        for table in ("tlog_entries", "tlog_nodes", "tlog_checkpoints", "tlog_heads"):
            s.execute(text(f"DELETE FROM {table} WHERE log = 'usage'"))


def _customer(base: str, ctx: Context, subject: int, memory: CheckpointMemory) -> CustomerClient:
    client = CustomerClient(base, StaticToken(issue_token(ctx, "customer", subject_id=subject)))
    client.checkpoints = memory
    return client


@pytest.mark.parametrize("attack", ["fork-same-size", "fork-larger", "rollback"])
def test_sdk_memory_catches_a_forked_or_rolled_back_log(ctx: Context, tmp_path: Path, attack: str) -> None:
    subject = make_subject(ctx)
    memory = CheckpointMemory(tmp_path / "checkpoints.json")
    with running_server(ctx) as (base, served):
        _uses(served, subject, 5, "honest")
        with _customer(base, served, subject, memory) as client:
            first = client.usage_checkpoint()
            _uses(served, subject, 3, "honest")  # the log grows honestly: a consistency proof links them
            second = client.usage_checkpoint()
            assert second.size == first.size + 3
            assert memory.remembered(first.note.split("\n")[0]) == second.note
            proof = client.usage_proof(second.size - 1)  # a proof's checkpoint goes through the memory too
            assert open_checkpoint(proof.checkpoint, proof.verifier_keys).size == second.size

            _rewrite_history(served)
            n = {"fork-same-size": second.size, "fork-larger": second.size + 4, "rollback": 2}[attack]
            _uses(served, subject, n, "rewritten")
            with pytest.raises(LogInconsistent) as caught:
                client.usage_checkpoint()
        assert caught.value.remembered == second.note
        assert open_checkpoint(caught.value.current, second.verifier_keys).size == n  # signed by the operator
        assert caught.value.reason.startswith("rollback" if attack == "rollback" else "fork")
        evidence = caught.value.write_evidence(tmp_path / "evidence").read_text()
        assert second.note in evidence
        assert caught.value.current in evidence
        # The memory keeps the honest checkpoint: asking again fails again (no "accept on second try").
        with _customer(base, served, subject, memory) as again, pytest.raises(LogInconsistent):
            again.usage_checkpoint()


def test_compliance_client_memory_and_witness_policy(ctx: Context, tmp_path: Path) -> None:
    from dataspace.audit import record_event

    with ctx.db.transaction() as s:
        for i in range(4):
            record_event(s, actor=None, action="test.memory", target=f"t:{i}")
    _, witness = load_or_create_key(tmp_path / "w", "w.example")
    with running_server(ctx) as (base, served):
        token = StaticToken(issue_token(served, "compliance"))
        with ComplianceClient(base, token) as client:
            client.checkpoints = CheckpointMemory(tmp_path / "c.json")
            cp = client.checkpoint()
            # A client that requires one witness refuses the operator's signature alone.
            client.checkpoints = CheckpointMemory(tmp_path / "c2.json", policy=WitnessPolicy((witness,), 1))
            with pytest.raises(CheckpointRejected):
                client.checkpoint()
        assert cp.witness_quorum == 0
        assert cp.witnesses == []


def test_remote_cli_remembers_and_reports_a_rewritten_audit_log(ctx: Context, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dataspace.audit import record_event
    from dataspace.cli import app
    from tests.factories.identities import make_client

    creds = make_client(ctx, "compliance")
    with running_server(ctx) as (base, served):
        with served.db.transaction() as s:
            for i in range(6):
                record_event(s, actor=None, action="test.cli", target=f"t:{i}")
        env = {
            "DATASPACE_URL": base,
            "DATASPACE_CLIENT_ID": creds.client.client_id,
            "DATASPACE_CLIENT_SECRET": creds.secret or "",
            "DATASPACE_STATE_DIR": str(tmp_path / "state"),
        }
        runner = CliRunner()
        ok = runner.invoke(app, ["remote", "audit", "export", "--out", str(tmp_path / "a.jsonl")], env=env)
        assert ok.exit_code == 0, ok.output
        with served.db.transaction() as s:
            for table in ("tlog_entries", "tlog_nodes", "tlog_checkpoints", "tlog_heads"):
                s.execute(text(f"DELETE FROM {table} WHERE log = 'audit'"))
        with served.db.transaction() as s:
            record_event(s, actor=None, action="test.cli", target="rewritten")
        bad = runner.invoke(app, ["remote", "audit", "export", "--out", str(tmp_path / "b.jsonl")], env=env)
    assert bad.exit_code == 1
    assert "rollback" in bad.output or "fork" in bad.output
    evidence = list((tmp_path / "state" / "evidence").glob("log-evidence-*.txt"))
    assert len(evidence) == 1
