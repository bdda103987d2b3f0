"""The partner-job API over HTTP with real tokens: ownership, refusals as problem+json, the whole flow."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from dataspace.app import create_app
from dataspace.context import Context
from dataspace.db import utcnow
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token


def test_partner_flow_over_http(ctx: Context) -> None:
    world = js.build_world(ctx, 60)
    client = TestClient(create_app(ctx))
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    other = bearer(issue_token(ctx, "partner", partner_key="voltgrid"))
    alice = bearer(issue_token(ctx, "steward"))
    bob = bearer(issue_token(ctx, "steward"))
    compliance = bearer(issue_token(ctx, "compliance"))

    body = {
        "purpose": js.PURPOSE,
        "features": js.FEATURES,
        "decision_schema": {"labels": js.LABELS},
        "k_min": 3,
        "epsilon_per_release": 1.0,
        "valid_until": (utcnow() + timedelta(days=30)).isoformat(),
    }
    r = client.post("/v1/partner/contracts", json=body, headers=partner)
    assert r.status_code == 201, r.text
    contract_id = r.json()["id"]
    assert r.json()["status"] == "proposed"
    # Another partner cannot see it; a partner cannot approve; a customer cannot even list.
    assert client.get(f"/v1/partner/contracts/{contract_id}", headers=other).status_code == 404
    assert client.post(f"/v1/contracts/{contract_id}/approve", headers=partner).status_code == 403
    # A model on an unapproved contract is refused, nothing stored.
    onnx = js.logistic_regression(js.WEIGHTS, js.BIAS)
    r = client.post(f"/v1/partner/models?contract_id={contract_id}", content=onnx, headers=partner)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")

    r = client.post(f"/v1/contracts/{contract_id}/approve", headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert client.get("/v1/contracts", headers=bob).json()[0]["approvals"] != []

    # Bad models: malformed, oversized, wrong signature -> 422, nothing stored.
    url = f"/v1/partner/models?contract_id={contract_id}"
    assert client.post(url, content=b"not onnx at all", headers=partner).status_code == 422
    assert client.post(url, content=b"\0" * (20 * 1024 * 1024 + 1), headers=partner).status_code == 422
    r = client.post(url, content=js.logistic_regression([1.0, 2.0], 0.0), headers=partner)
    assert r.status_code == 422
    assert "features" in r.json()["detail"]
    assert client.get("/v1/partner/models", headers=partner).json() == []
    # The other partner cannot upload against this contract.
    assert client.post(url, content=onnx, headers=other).status_code == 404

    r = client.post(url, content=onnx, headers=partner)
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    assert r.json()["status"] == "ready"
    r = client.post("/v1/partner/jobs", json={"model_id": model_id}, headers=partner)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert client.post("/v1/partner/jobs", json={"model_id": model_id}, headers=other).status_code == 404
    assert client.get(f"/v1/partner/jobs/{job_id}/results", headers=partner).status_code == 409  # not run yet

    assert ctx.jobs.run_job(job_id).status == "succeeded"
    job = client.get(f"/v1/partner/jobs/{job_id}", headers=partner).json()
    assert job["status"] == "succeeded"
    assert "stats" not in job  # exact counts are for the operator only
    assert client.get(f"/v1/partner/jobs/{job_id}", headers=other).status_code == 404

    first = client.get(f"/v1/partner/jobs/{job_id}/results", headers=partner)
    assert first.status_code == 200, first.text
    assert first.json() == client.get(f"/v1/partner/jobs/{job_id}/results", headers=partner).json()
    assert client.get(f"/v1/partner/jobs/{job_id}/results", headers=other).status_code == 404
    assert client.get("/v1/partner/budget", headers=partner).json() == [
        {"purpose": js.PURPOSE, "epsilon_total": 10.0, "epsilon_spent": 1.0, "epsilon_remaining": 9.0}
    ]

    # The operator's view: decisions keyed by subject; partners cannot read it.
    assert client.get(f"/v1/jobs/{job_id}/decisions", headers=partner).status_code == 403
    page = client.get(f"/v1/jobs/{job_id}/decisions", headers=compliance).json()
    assert {d["subject_id"] for d in page["decisions"]} <= set(world.consenting)
    assert page["stats"]["decisions"] == len(page["decisions"])

    # Cancel a queued job: its epsilon is refunded (it revealed nothing); a finished one cannot be cancelled.
    job3 = client.post("/v1/partner/jobs", json={"model_id": model_id}, headers=partner).json()["id"]
    assert client.get("/v1/partner/budget", headers=partner).json()[0]["epsilon_spent"] == 2.0
    assert client.post(f"/v1/partner/jobs/{job3}/cancel", headers=other).status_code == 404
    cancelled = client.post(f"/v1/partner/jobs/{job3}/cancel", headers=partner).json()
    assert (cancelled["status"], cancelled["error"]) == ("cancelled", "cancelled")
    assert client.get("/v1/partner/budget", headers=partner).json()[0]["epsilon_spent"] == 1.0

    # Over budget -> 409 problem, at submission: a job pays its release up front, whatever its outcome.
    r = client.put(
        "/v1/privacy-budgets",
        json={"partner_key": js.PARTNER, "purpose": js.PURPOSE, "epsilon_total": 1.5},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    r = client.post("/v1/partner/jobs", json={"model_id": model_id}, headers=partner)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.post(f"/v1/partner/jobs/{job_id}/cancel", headers=partner).status_code == 409
