"""Witnesses catch a dishonest operator: the server publishes checkpoints cosigned by two witness processes;
the witnesses refuse a forked tree (same size, another root, signed with the operator's key) and a rollback,
keep their state across a crash, answer gossip with the evidence; the server keeps working when one is down,
and a witness that hangs never holds up a checkpoint or proof request (only the background task submits).

``_witnessed`` does what the server's ``witness-cosigning`` background task does every second; the routes
only read the cosignatures it stored."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from dataspace.app import create_app
from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.principal import Principal
from dataspace.tlog import cosigning
from dataspace.tlog import log as tlog
from tests.factories.identities import bearer, issue_token
from tests.witness_support import WitnessProcess
from transparency import merkle
from transparency.cosign import WitnessPolicy, open_cosigned, verified_cosigners
from transparency.note import Checkpoint, CheckpointError, key_name, sign_checkpoint


@pytest.fixture
def witnesses(ctx: Context, tmp_path: Path) -> Iterator[list[WitnessProcess]]:
    keys = tlog.verifier_keys(ctx.settings, ctx.keys)
    logs = {tlog.origin_for(ctx.settings.resolved_issuer, name): keys for name in tlog.LOGS}
    procs = [WitnessProcess(f"w{i}.witness.test", tmp_path / f"w{i}", logs).start() for i in (1, 2)]
    ctx.settings = ctx.settings.model_copy(
        update={
            "witness_urls": ",".join(p.url for p in procs),
            "witness_keys": ",".join(p.vkey for p in procs),
            "witness_quorum": 2,
        }
    )
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
def client(ctx: Context, witnesses: list[WitnessProcess]) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def _events(ctx: Context, n: int) -> None:
    steward = Principal(subject="alice", role="steward", client_id="console")
    with ctx.db.transaction() as s:
        for i in range(n):
            record_event(s, actor=steward, action="catalog.update", target=f"field:f{i}", details={"i": i})


def _witnessed(ctx: Context) -> None:
    """One round of the background task: sequence each log, submit its latest checkpoint to the witnesses
    and store their cosignatures."""
    for name in tlog.LOGS:
        tlog.sequence(ctx.settings, ctx.db, ctx.keys, name)
        cosigning.witnesses_for(ctx.settings).cosign_latest(ctx.db, name)


def _forged(ctx: Context, size: int) -> str:
    """A checkpoint of another tree at ``size``, signed with the operator's own key (a split view)."""
    origin = tlog.origin_for(ctx.settings.resolved_issuer, "audit")
    other = merkle.root_from_leaf_hashes([merkle.leaf_hash(f"forged {i}".encode()) for i in range(size)])
    key = ctx.keys.signing_key
    return sign_checkpoint(Checkpoint(origin, size, other), name=key_name(origin.rsplit("/", 1)[0], key), key=key)


def _policy(w: list[WitnessProcess], quorum: int = 2) -> WitnessPolicy:
    return WitnessPolicy.from_strings([p.vkey for p in w], quorum)


def test_published_checkpoints_carry_both_cosignatures(
    ctx: Context, client: TestClient, witnesses: list[WitnessProcess]
) -> None:
    _events(ctx, 5)
    _witnessed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    cp = client.get("/v1/audit/checkpoint", headers=h).json()
    assert cp["witness_quorum"] == 2
    assert [w["state"] for w in cp["witnesses"]] == ["ok", "ok"]
    assert open_cosigned(cp["note"], cp["verifier_keys"], _policy(witnesses)).size == cp["size"]
    # The stored note is the cosigned one: every later reader gets the cosignatures.
    with ctx.db.session() as s:
        stored = tlog.latest_checkpoint(s, log="audit")
    assert stored is not None
    assert len(verified_cosigners(stored.note, _policy(witnesses).witnesses)) == 2
    # The log grows: the next checkpoint is cosigned through a consistency proof from the last one.
    _events(ctx, 7)
    _witnessed(ctx)
    cp2 = client.get("/v1/audit/checkpoint", headers=h).json()
    assert cp2["size"] > cp["size"]
    open_cosigned(cp2["note"], cp2["verifier_keys"], _policy(witnesses))
    assert [w["cosigned_sizes"].get("audit", None) for w in cp2["witnesses"]] == [cp2["size"]] * 2


def test_witnesses_refuse_a_fork_and_a_rollback(
    ctx: Context, client: TestClient, witnesses: list[WitnessProcess]
) -> None:
    _events(ctx, 6)
    _witnessed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    cp = client.get("/v1/audit/checkpoint", headers=h).json()
    size = cp["size"]
    forged = _forged(ctx, size)
    w1 = witnesses[0]
    # Same size, another root: 422, even with the operator's valid signature.
    r = httpx.post(f"{w1.url}/add-checkpoint", content=f"old {size}\n\n{forged}".encode())
    assert r.status_code == 422
    # A larger forged tree with a made-up proof: 422.
    bigger = _forged(ctx, size + 3)
    proof = "".join(base64.b64encode(bytes([i]) * 32).decode() + "\n" for i in range(3))
    r = httpx.post(f"{w1.url}/add-checkpoint", content=f"old {size}\n{proof}\n{bigger}".encode())
    assert r.status_code == 422
    # Rollback: a smaller tree. From the witness's size it is a bad request; from its own size, 409 + size.
    small = _forged(ctx, size - 2)
    assert httpx.post(f"{w1.url}/add-checkpoint", content=f"old {size}\n\n{small}".encode()).status_code == 400
    r = httpx.post(f"{w1.url}/add-checkpoint", content=f"old {size - 2}\n\n{small}".encode())
    assert r.status_code == 409
    assert r.headers["content-type"] == "text/x.tlog.size"
    assert r.text == f"{size}\n"
    # Not the log's key: 403; unknown origin: 404; garbage: 400.
    other = forged.replace("\u2014 ", "\u2014 ", 1)
    tampered = other.replace(other.split("\n")[2], base64.b64encode(b"\x07" * 32).decode())
    assert httpx.post(f"{w1.url}/add-checkpoint", content=f"old {size}\n\n{tampered}".encode()).status_code == 403
    unknown = forged.replace(forged.split("\n")[0], "elsewhere.example/log")
    assert httpx.post(f"{w1.url}/add-checkpoint", content=f"old 0\n\n{unknown}".encode()).status_code == 404
    assert httpx.post(f"{w1.url}/add-checkpoint", content=b"old 01\n\nx").status_code == 400
    # The honest checkpoint still verifies, and the forged one never got a cosignature.
    with pytest.raises(CheckpointError):
        open_cosigned(forged, cp["verifier_keys"], _policy(witnesses, 1))

    # Gossip: a customer hands the forged checkpoint they were shown to a witness: split view, with evidence.
    r = httpx.post(f"{w1.url}/check", content=forged.encode())
    assert r.status_code == 409
    body = r.json()
    assert body["verdict"] == "split-view"
    evidence = body["witness_checkpoint"]
    assert evidence.split("\n")[:3] == cp["note"].split("\n")[:3]
    assert verified_cosigners(evidence, _policy(witnesses).witnesses)  # the witness's own cosignature
    r = httpx.post(f"{w1.url}/check", content=cp["note"].encode())
    assert r.json()["verdict"] == "consistent"


def test_witness_state_survives_a_crash(ctx: Context, client: TestClient, witnesses: list[WitnessProcess]) -> None:
    _events(ctx, 4)
    _witnessed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    cp = client.get("/v1/audit/checkpoint", headers=h).json()
    w1 = witnesses[0]
    w1.stop()  # SIGKILL
    w1.start()
    forged = _forged(ctx, cp["size"])
    r = httpx.post(f"{w1.url}/add-checkpoint", content=f"old 0\n\n{forged}".encode())
    assert r.status_code == 409
    assert r.text == f"{cp['size']}\n"
    assert httpx.post(f"{w1.url}/add-checkpoint", content=f"old {cp['size']}\n\n{forged}".encode()).status_code == 422
    origin = cp["note"].split("\n")[0]
    latest = httpx.get(f"{w1.url}/checkpoint", params={"origin": origin}).text
    assert latest.split("\n")[:3] == cp["note"].split("\n")[:3]


def test_server_keeps_working_when_a_witness_is_down(
    ctx: Context, client: TestClient, witnesses: list[WitnessProcess]
) -> None:
    witnesses[1].stop()
    _events(ctx, 3)
    _witnessed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    r = client.get("/v1/audit/checkpoint", headers=h)
    assert r.status_code == 200
    cp = r.json()
    assert [w["state"] for w in cp["witnesses"]] == ["ok", "unreachable"]
    # One cosignature: enough for a quorum of 1, not for 2 (clients requiring 2 refuse it, as they should).
    open_cosigned(cp["note"], cp["verifier_keys"], _policy(witnesses, 1))
    with pytest.raises(CheckpointError):
        open_cosigned(cp["note"], cp["verifier_keys"], _policy(witnesses, 2))
    # It comes back: the next round catches it up from its size with a consistency proof.
    witnesses[1].start()
    _events(ctx, 2)
    _witnessed(ctx)
    cp2 = client.get("/v1/audit/checkpoint", headers=h).json()
    assert [w["state"] for w in cp2["witnesses"]] == ["ok", "ok"]
    open_cosigned(cp2["note"], cp2["verifier_keys"], _policy(witnesses, 2))


def test_offline_verifier_needs_the_quorum_and_catches_fork_and_rollback(
    ctx: Context, client: TestClient, witnesses: list[WitnessProcess], tmp_path: Path
) -> None:
    from transparency.export import verify_export

    _events(ctx, 9)
    _witnessed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    first = client.get("/v1/audit/checkpoint", headers=h).json()
    _events(ctx, 4)
    _witnessed(ctx)
    export = tmp_path / "audit.jsonl"
    export.write_bytes(client.get("/v1/audit/export", params={"log": "audit"}, headers=h).content)
    keys = first["verifier_keys"]
    assert verify_export(export, keys, policy=_policy(witnesses), remembered=[first["note"]]).ok
    # A customer remembers the forged checkpoint a dishonest server showed them at that size: a fork.
    report = verify_export(export, keys, policy=_policy(witnesses), remembered=[_forged(ctx, first["size"])])
    assert not report.ok
    assert report.reason is not None
    assert report.reason.startswith("fork")
    # They remember a larger tree than the export: a rollback.
    report = verify_export(export, keys, remembered=[_forged(ctx, first["size"] + 10)])
    assert not report.ok
    assert report.reason is not None
    assert report.reason.startswith("rollback")
    # An export whose checkpoint lacks the cosignatures fails a quorum policy, passes quorum 0 (as before).
    bare = tmp_path / "bare.jsonl"
    lines = export.read_text().split("\n")
    import json

    head = json.loads(lines[0])
    head["note"] = head["note"].split("\n\n")[0] + "\n\n" + head["note"].split("\n\n")[1].split("\n")[0] + "\n"
    bare.write_text("\n".join([json.dumps(head, separators=(",", ":")), *lines[1:]]))
    assert verify_export(bare, keys).ok
    report = verify_export(bare, keys, policy=_policy(witnesses))
    assert not report.ok
    assert report.reason is not None
    assert "cosignatures" in report.reason


def test_sdk_requires_the_quorum_on_usage_checkpoints_and_proofs(
    ctx: Context, witnesses: list[WitnessProcess], tmp_path: Path
) -> None:
    from clients.sdk import CheckpointMemory, CheckpointRejected, CustomerClient, StaticToken
    from dataspace.usage import UsageEntry, record_usage
    from dataspace.witness import WitnessState
    from tests.factories.identities import make_subject
    from tests.integration.oauth_server import running_server

    subject = make_subject(ctx)
    memory = CheckpointMemory(tmp_path / "m.json", policy=_policy(witnesses, 2))
    with running_server(ctx) as (base, served):
        for p in witnesses:  # the served issuer names its own origins: the witnesses watch those too
            WitnessState(p.data_dir, p.name).add_log(
                tlog.origin_for(base, "usage"), tlog.verifier_keys(served.settings, served.keys)
            )
        with served.db.transaction() as s:
            record_usage(s, [UsageEntry(1, subject, ("income",), "acme", "insurance.offer", "x")])
        _witnessed(served)
        token = StaticToken(issue_token(served, "customer", subject_id=subject))
        with CustomerClient(base, token) as sdk:
            sdk.checkpoints = memory
            cp = sdk.usage_checkpoint()
            assert cp.size >= 1
            sdk.usage_proof(0)
            witnesses[0].stop()
            with served.db.transaction() as s:
                record_usage(s, [UsageEntry(2, subject, ("income",), "acme", "insurance.offer", "y")])
            _witnessed(served)
            with pytest.raises(CheckpointRejected):
                sdk.usage_checkpoint()  # one cosignature of the two required


def test_compliance_console_gossip(ctx: Context, client: TestClient, witnesses: list[WitnessProcess]) -> None:
    _events(ctx, 6)
    h = bearer(issue_token(ctx, "compliance"))
    cp = client.get("/v1/audit/checkpoint", headers=h).json()
    post = {**h, "content-type": "text/plain"}
    r = client.post("/v1/audit/checkpoints/check", content=cp["note"], headers=post)
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "consistent"
    assert (
        client.post("/v1/audit/checkpoints/check", content=_forged(ctx, cp["size"]), headers=post).json()["verdict"]
        == "split-view"
    )
    assert (
        client.post("/v1/audit/checkpoints/check", content=_forged(ctx, cp["size"] + 50), headers=post).json()[
            "verdict"
        ]
        == "ahead"
    )
    # Not signed by this server: refused without detail; customers may not call it.
    assert client.post("/v1/audit/checkpoints/check", content="x\n1\nAAAA\n\n", headers=post).status_code in {400, 422}
    customer = bearer(issue_token(ctx, "customer", subject_id=None))
    assert (
        client.post(
            "/v1/audit/checkpoints/check", content=cp["note"], headers={**customer, "content-type": "text/plain"}
        ).status_code
        == 403
    )


def test_a_rolled_back_server_is_reported_by_its_witnesses(
    ctx: Context, client: TestClient, witnesses: list[WitnessProcess], caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import text

    _events(ctx, 8)
    _witnessed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    cp = client.get("/v1/audit/checkpoint", headers=h).json()
    with ctx.db.transaction() as s:  # the operator restores an older state of its log
        for table in ("tlog_entries", "tlog_nodes", "tlog_checkpoints", "tlog_heads"):
            s.execute(text(f"DELETE FROM {table} WHERE log = 'audit'"))
    _events(ctx, 2)
    with caplog.at_level("WARNING", logger="dataspace.tlog.witnesses"):
        _witnessed(ctx)
        after = client.get("/v1/audit/checkpoint", headers=h).json()
    assert after["size"] < cp["size"]
    assert [w["state"] for w in after["witnesses"]] == ["ahead-of-log", "ahead-of-log"]
    assert "ahead-of-log" in caplog.text
    with pytest.raises(CheckpointError):  # no witness cosigned the rolled-back log
        open_cosigned(after["note"], after["verifier_keys"], _policy(witnesses, 1))


def test_offline_verify_command_with_witness_policy(
    ctx: Context, client: TestClient, witnesses: list[WitnessProcess], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from dataspace.cli import app

    _events(ctx, 5)
    _witnessed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    cp = client.get("/v1/audit/checkpoint", headers=h).json()
    export = tmp_path / "audit.jsonl"
    export.write_bytes(client.get("/v1/audit/export", headers=h).content)
    (tmp_path / "seen.txt").write_text(cp["note"])
    (tmp_path / "forged.txt").write_text(_forged(ctx, cp["size"]))
    args = ["audit", "verify", str(export), *[a for k in cp["verifier_keys"] for a in ("--key", k)]]
    args += [a for w in witnesses for a in ("--witness-key", w.vkey)]
    runner = CliRunner()
    ok = runner.invoke(app, [*args, "--quorum", "2", "--remembered", str(tmp_path / "seen.txt")])
    assert ok.exit_code == 0, ok.output
    fork = runner.invoke(app, [*args, "--quorum", "2", "--remembered", str(tmp_path / "forged.txt")])
    assert fork.exit_code == 1
    assert "fork" in fork.output
    too_many = runner.invoke(app, [*args, "--quorum", "3"])
    assert too_many.exit_code == 2


class HangingWitness:
    """A witness address that accepts connections and never answers (a witness that hangs); counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._open.append(conn)  # held open, never read or answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._open:
            conn.close()
        self.sock.close()


def test_checkpoint_and_proof_requests_never_wait_for_a_witness(ctx: Context, tmp_path: Path) -> None:
    """With the only witness hanging, the checkpoint, proof, consistency and export routes answer without
    connecting to it (so a down or hanging witness costs requests nothing); the background round is the
    only one that connects, and the routes then report what it saw."""
    from dataspace.usage import UsageEntry, record_usage
    from dataspace.witness import WitnessState
    from tests.factories.identities import make_subject

    hanging = HangingWitness()
    try:
        vkey = WitnessState(tmp_path / "hung", "hung.witness.test").cosigner.vkey
        ctx.settings = ctx.settings.model_copy(
            update={
                "witness_urls": hanging.url,
                "witness_keys": vkey,
                "witness_quorum": 1,
                "witness_timeout_seconds": 1.0,
            }
        )
        subject = make_subject(ctx)
        with ctx.db.transaction() as s:
            record_usage(s, [UsageEntry(1, subject, ("income",), "acme", "insurance.offer", "x")])
        _events(ctx, 3)
        client = TestClient(create_app(ctx))  # no lifespan: no background task runs in this test
        me = bearer(issue_token(ctx, "customer", subject_id=subject))
        auditor = bearer(issue_token(ctx, "compliance"))

        def requests() -> list[dict]:
            answers = [
                client.get("/v1/me/usage/checkpoint", headers=me),
                client.get("/v1/me/usage/0/proof", headers=me),
                client.get("/v1/me/usage/consistency", params={"first": 1, "second": 1}, headers=me),
                client.get("/v1/audit/checkpoint", headers=auditor),
                client.get("/v1/audit/checkpoint", params={"log": "usage"}, headers=auditor),
                client.get("/v1/audit/export", headers=auditor),
            ]
            for r in answers:
                assert r.status_code == 200, r.text
            return [answers[0].json(), answers[3].json()]

        for body in requests():
            assert [w["state"] for w in body["witnesses"]] == ["unknown"]
            assert body["witness_quorum"] == 1
        assert hanging.accepted == 0  # no request connected to the witness

        # The background round: it connects, and waits out the timeout.
        cosigning.witnesses_for(ctx.settings).cosign_latest(ctx.db, "usage")
        assert hanging.accepted >= 1
        seen = hanging.accepted
        for body in requests():
            assert [w["state"] for w in body["witnesses"]] == ["unreachable"]
        assert hanging.accepted == seen  # still none from the requests
    finally:
        hanging.close()
