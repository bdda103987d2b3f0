"""The HTTP edge's types: numbers past what the database stores are a 422 on every backend (SQLite's driver
would raise an OverflowError, a 500), every integer parameter of the OpenAPI document has a maximum, and the
usage ledger reports job ids as the integers jobs are."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from dataspace.app import create_app
from dataspace.context import Context
from dataspace.tlog.log import sequence
from dataspace.usage import UsageEntry, record_usage
from tests.factories.identities import bearer, issue_token, make_subject

HUGE = (2**63, 2**64, 10**30)


@pytest.fixture
def client(ctx: Context) -> TestClient:
    return TestClient(create_app(ctx), raise_server_exceptions=False)


@pytest.mark.parametrize("number", HUGE)
@pytest.mark.parametrize(
    ("role", "url"),
    [
        ("customer", "/v1/me/usage/{n}/proof"),
        ("customer", "/v1/me/consents/history?before={n}"),
        ("customer", "/v1/me/points/postings?before={n}"),
        ("customer", "/v1/me/consents/{n}"),
        ("steward", "/v1/jobs/1/decisions?after={n}"),
        ("steward", "/v1/jobs/{n}/decisions"),
        ("compliance", "/v1/audit/events?subject_id={n}"),
        ("compliance", "/v1/audit/events?cursor={n}"),
        ("compliance", "/v1/audit/proofs/inclusion?index={n}&tree_size={n}"),
        ("compliance", "/v1/audit/proofs/consistency?first=1&second={n}"),
        ("steward", "/v1/events/schemas/job.completed/v{n}"),
    ],
)
def test_numbers_past_int64_are_invalid_input(
    ctx: Context, client: TestClient, role: str, url: str, number: int
) -> None:
    token = issue_token(ctx, role)
    method = "DELETE" if url == "/v1/me/consents/{n}" else "GET"
    response = client.request(method, url.format(n=number), headers=bearer(token))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def _integer_schemas(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, dict):
        found = [schema] if schema.get("type") == "integer" else []
        return found + [s for v in schema.values() for s in _integer_schemas(v)]
    if isinstance(schema, list):
        return [s for v in schema for s in _integer_schemas(v)]
    return []


def test_every_integer_a_request_carries_is_bounded(ctx: Context) -> None:
    doc = create_app(ctx).openapi()
    components = doc.get("components", {}).get("schemas", {})
    unbounded: list[str] = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            inputs: list[tuple[str, Any]] = [(p["name"], p.get("schema")) for p in operation.get("parameters", [])]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                name = body.get("$ref", "").rsplit("/", 1)[-1]
                inputs.append((f"body {name}", components.get(name, body)))
            for name, schema in inputs:
                for integer in _integer_schemas(schema):
                    if not integer.get("maximum", 2**64) <= 2**63 - 1:
                        unbounded.append(f"{method.upper()} {path} {name}")
    assert unbounded == []


def test_usage_reports_job_ids_as_integers(ctx: Context, client: TestClient) -> None:
    subject = make_subject(ctx)
    with ctx.db.transaction() as s:
        record_usage(s, [UsageEntry(9, subject, ("age",), "acme", "insurance.offer", "bundle-x")])
    sequence(ctx.settings, ctx.db, ctx.keys, "usage")
    token = issue_token(ctx, "customer", subject_id=subject)
    response = client.get("/v1/me/usage", headers=bearer(token))
    assert response.status_code == 200, response.text
    (use,) = response.json()["fields"][0]["uses"]
    assert use["job_id"] == 9
    assert isinstance(use["job_id"], int)
    proof = client.get(f"/v1/me/usage/{use['index']}/proof", headers=bearer(token))
    assert proof.status_code == 200, proof.text
    assert proof.json()["index"] == use["index"]
    documented = client.app.openapi()["components"]["schemas"]  # type: ignore[attr-defined]
    job_id = documented["UseRead"]["properties"]["job_id"]  # null for a real-time decision's use
    types = {job_id["type"]} if "type" in job_id else {o.get("type") for o in job_id["anyOf"]}
    assert types <= {"integer", "null"}
    assert "integer" in types
