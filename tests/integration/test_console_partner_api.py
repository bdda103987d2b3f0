"""What the compliance console and the partner view need from the API: audit filters that refuse bad values
(422, never a filter silently matching nothing or ignored), the action picker's list, system actions named
after the process that did them, and a release's noise interval."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from dataspace.app import create_app
from dataspace.audit import record_event, system_actor
from dataspace.context import Context
from dataspace.jobs.release import noise_interval
from dataspace.principal import SYSTEM, Principal
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def _seed(ctx: Context) -> None:
    steward = Principal(subject="alice", role="steward", client_id="console")
    with ctx.db.transaction() as s:
        record_event(s, actor=steward, action="catalog.update", target="field:age")
        record_event(s, actor=None, action="job.succeeded", target="job:1")
        record_event(s, actor=SYSTEM, action="consent.expired", target="grant:4", details={"subject_id": 3})
        record_event(s, actor=None, action="authz.denied", target="route:/v1/me", result="unauthorized")


@pytest.mark.parametrize(
    "params",
    [
        {"action": "Consent Grant"},  # not an action's shape
        {"action": "consent.*.x"},
        {"action": "consent.%"},  # a LIKE wildcard smuggled into an exact match
        {"action": "_%*"},
        {"actor": "alice"},  # an actor is role:name
        {"partner": "acme corp"},
        {"subject_id": "abc"},
        {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"},  # an empty range
        {"since": "2030-01-01T00:00:00"},  # no timezone
        {"subject": "7"},  # a misspelt filter is not ignored
        {"limit": "0"},
    ],
)
def test_bad_audit_filters_are_422(ctx: Context, client: TestClient, params: dict[str, str]) -> None:
    h = bearer(issue_token(ctx, "compliance"))
    r = client.get("/v1/audit/events", params=params, headers=h)
    assert r.status_code == 422, (params, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")


def test_good_filters_actions_and_named_system_actors(ctx: Context, client: TestClient) -> None:
    _seed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    actions = client.get("/v1/audit/actions", headers=h)
    assert actions.status_code == 200, actions.text
    assert {"catalog.update", "job.succeeded", "consent.expired", "authz.denied"} <= set(actions.json()["actions"])
    assert actions.json()["actions"] == sorted(actions.json()["actions"])
    assert client.get("/v1/audit/actions", params={"log": "ledger"}, headers=h).status_code == 422
    assert client.get("/v1/audit/actions", headers=bearer(issue_token(ctx, "customer"))).status_code == 403

    def actor_of(action: str) -> str:
        r = client.get("/v1/audit/events", params={"action": action}, headers=h)
        assert r.status_code == 200, r.text
        return str(r.json()["items"][0]["actor"])

    assert actor_of("job.succeeded") == "system:job-runner"
    assert actor_of("consent.expired") == "system:expiry-sweep"
    assert actor_of("catalog.update") == "steward:alice"
    denied = client.get("/v1/audit/events", params={"action": "authz.denied"}, headers=h).json()["items"]
    assert "anonymous" in {e["actor"] for e in denied}  # an unauthenticated caller, not the server
    by_actor = client.get("/v1/audit/events", params={"actor": "system:expiry-sweep"}, headers=h).json()["items"]
    assert [e["action"] for e in by_actor] == ["consent.expired"]
    prefix = client.get("/v1/audit/events", params={"action": "consent.*"}, headers=h).json()["items"]
    assert {e["action"] for e in prefix} == {"consent.expired"}


def test_inclusion_proof_carries_the_signed_entry_bytes(ctx: Context, client: TestClient) -> None:
    """The console hashes these bytes itself: they must be exactly what the leaf commits to."""
    _seed(ctx)
    h = bearer(issue_token(ctx, "compliance"))
    cp = client.get("/v1/audit/checkpoint", headers=h).json()
    found = client.get("/v1/audit/events", params={"action": "consent.expired"}, headers=h).json()["items"][0]
    proof = client.get(
        "/v1/audit/proofs/inclusion", params={"index": found["index"], "tree_size": cp["size"]}, headers=h
    ).json()
    assert hashlib.sha256(b"\x00" + proof["entry"].encode()).hexdigest() == proof["leaf_hash"]
    assert json.loads(proof["entry"])["actor"] == "system:expiry-sweep"


def test_system_actor_names() -> None:
    assert system_actor("job.failed") == "system:job-runner"
    assert system_actor("release.created") == "system:job-runner"
    assert system_actor("oauth.refresh_reused") == "system:authorization-server"
    assert system_actor("backup.restored") == "system:backup"
    assert system_actor("auth.login_failed") == "anonymous"
    assert system_actor("something.new") == "system:server"


def test_release_carries_its_noise_interval(ctx: Context, client: TestClient) -> None:
    js.build_world(ctx, n=45)
    contract_id = js.approved_contract(ctx)
    model_id = js.upload_onnx(ctx, contract_id)
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    job_id = client.post("/v1/partner/jobs", json={"model_id": model_id}, headers=partner).json()["id"]
    assert ctx.jobs.run_job(job_id).status == "succeeded"
    release = client.get(f"/v1/partner/jobs/{job_id}/results", headers=partner).json()
    noise = release["noise"]
    assert noise["confidence"] == 0.95
    # Laplace with scale 1/epsilon: 95% of the noise within ln(20)/epsilon of zero
    assert noise["count"] == pytest.approx(2.995732 / release["epsilon"], rel=1e-5)
    assert set(release["result"]["counts"]) == set(js.LABELS)


def test_noise_interval_of_a_bounded_mean() -> None:
    result = {"kind": "bounded_mean", "count": 100, "mean": 0.5, "bounds": [0.0, 1.0], "suppressed": False}
    noise = noise_interval(1.0, result)
    assert noise["count"] == pytest.approx(2 * 2.995732, rel=1e-5)
    assert 0 < noise["mean"] <= 1.0
    suppressed = noise_interval(1.0, {"kind": "bounded_mean", "count": None, "mean": None, "suppressed": True})
    assert "mean" not in suppressed
    assert noise_interval(0.0, result) == {"confidence": 0.95}
