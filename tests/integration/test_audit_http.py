"""The audit and usage routes through real OAuth tokens: search, export, checkpoint, proofs, ownership."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dataspace.app import create_app
from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.principal import Principal
from dataspace.usage import UsageEntry, record_usage
from tests.factories.identities import bearer, issue_token, make_subject
from transparency import merkle
from transparency.export import verify_export
from transparency.note import open_checkpoint


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def _seed(ctx: Context, subject_a: int, subject_b: int) -> None:
    steward = Principal(subject="alice", role="steward", client_id="console")
    with ctx.db.transaction() as s:
        for i in range(11):
            record_event(s, actor=steward, action="catalog.update", target=f"field:f{i}", details={"i": i})
        record_usage(
            s,
            [
                UsageEntry(9, subject_a, ("income",), "acme", "insurance.offer", "bundle-x"),
                UsageEntry(9, subject_b, ("income",), "acme", "insurance.offer", "none"),
            ],
        )


def test_compliance_searches_exports_and_verifies(ctx: Context, client: TestClient, tmp_path: Path) -> None:
    _seed(ctx, make_subject(ctx), make_subject(ctx))
    h = bearer(issue_token(ctx, "compliance"))
    r = client.get("/v1/audit/events", params={"action": "catalog.update", "limit": 5}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5
    assert body["next_cursor"]
    r2 = client.get(
        "/v1/audit/events", params={"action": "catalog.update", "limit": 50, "cursor": body["next_cursor"]}, headers=h
    )
    assert len(r2.json()["items"]) == 6

    cp = client.get("/v1/audit/checkpoint", params={"log": "audit"}, headers=h).json()
    keys = cp["verifier_keys"]
    parsed = open_checkpoint(cp["note"], keys)
    assert parsed.size == cp["size"] >= 11

    for fmt in ("jsonl", "csv"):
        resp = client.get("/v1/audit/export", params={"format": fmt}, headers=h)
        assert resp.status_code == 200
        path = tmp_path / f"e.{fmt}"
        path.write_bytes(resp.content)
        report = verify_export(path, keys)
        assert report.ok, report
        assert "bundle-x" not in resp.text  # the audit log holds no usage results, only actions

    size = cp["size"]
    proof = client.get("/v1/audit/proofs/inclusion", params={"index": 3, "tree_size": size}, headers=h).json()
    merkle.verify_inclusion(
        3, size, bytes.fromhex(proof["leaf_hash"]), [bytes.fromhex(x) for x in proof["hashes"]], parsed.root_hash
    )
    # the export itself was audited: a newer checkpoint is consistent with the old one
    cp2 = client.get("/v1/audit/checkpoint", headers=h).json()
    assert cp2["size"] > size
    cons = client.get("/v1/audit/proofs/consistency", params={"first": size, "second": cp2["size"]}, headers=h).json()
    merkle.verify_consistency(
        size, cp2["size"], parsed.root_hash, bytes.fromhex(cp2["root_hash"]), [bytes.fromhex(x) for x in cons["hashes"]]
    )
    bad = client.get("/v1/audit/proofs/inclusion", params={"index": 0, "tree_size": 10**9}, headers=h)
    assert bad.status_code == 404
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_customer_sees_only_own_usage_with_proofs(ctx: Context, client: TestClient) -> None:
    a, b = make_subject(ctx), make_subject(ctx)
    _seed(ctx, a, b)
    ha = bearer(issue_token(ctx, "customer", subject_id=a))
    usage = client.get("/v1/me/usage", headers=ha)
    assert usage.status_code == 200, usage.text
    fields = usage.json()["fields"]
    assert [f["field"] for f in fields] == ["income"]
    (use,) = fields[0]["uses"]
    assert (use["partner"], use["purpose"], use["result"]) == ("acme", "insurance.offer", "bundle-x")

    # before sequencing the index may be unknown; the proof route sequences on demand
    client.get("/v1/audit/checkpoint", params={"log": "usage"}, headers=bearer(issue_token(ctx, "steward")))
    index = client.get("/v1/me/usage", headers=ha).json()["fields"][0]["uses"][0]["index"]
    p = client.get(f"/v1/me/usage/{index}/proof", headers=ha)
    assert p.status_code == 200, p.text
    pj = p.json()
    cp = open_checkpoint(pj["checkpoint"], pj["verifier_keys"])
    merkle.verify_inclusion(
        index, pj["tree_size"], bytes.fromhex(pj["leaf_hash"]), [bytes.fromhex(x) for x in pj["hashes"]], cp.root_hash
    )
    other = 1 - index
    assert client.get(f"/v1/me/usage/{other}/proof", headers=ha).status_code == 404


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        ("customer", "/v1/audit/events", 403),
        ("partner", "/v1/audit/export", 403),
        ("steward", "/v1/audit/events", 403),
        ("steward", "/v1/audit/checkpoint", 404),  # allowed; the log is empty
        ("partner", "/v1/me/usage", 403),
        ("compliance", "/v1/audit/events", 200),
    ],
)
def test_who_may_read_what(ctx: Context, client: TestClient, role: str, path: str, status: int) -> None:
    r = client.get(path, headers=bearer(issue_token(ctx, role)))
    assert r.status_code == status, r.text
    assert client.get(path).status_code == 401
