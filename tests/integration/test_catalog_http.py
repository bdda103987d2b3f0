from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dataspace.app import create_app
from tests.factories.catalog import customer_row, load_demo_catalog
from tests.factories.identities import bearer, issue_token


@pytest.fixture
def client(ctx):
    with TestClient(create_app(ctx)) as c:
        yield c


def test_every_role_reads_the_data_manual(ctx, client):
    load_demo_catalog(ctx)
    token = issue_token(ctx, "customer")
    r = client.get("/v1/catalog/manual", headers=bearer(token))
    assert r.status_code == 200
    dims = r.json()
    assert [d["key"] for d in dims] == ["identity", "behaviour", "assets"]
    city = next(f for f in dims[0]["fields"] if f["key"] == "city")
    assert city["sharing_scope"].startswith("Only as a city tier")
    assert city["i18n"]["zh-CN"]["label"] == "居住城市"


def test_only_stewards_write_and_errors_are_problem_json(ctx, client):
    load_demo_catalog(ctx)
    steward = bearer(issue_token(ctx, "steward"))
    customer = bearer(issue_token(ctx, "customer"))
    r = client.patch("/v1/catalog/fields/age", json={"points_value": 75}, headers=customer)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    r = client.patch("/v1/catalog/fields/age", json={"points_value": 75}, headers=steward)
    assert r.status_code == 200
    assert r.json()["version"] == 2
    r = client.patch("/v1/catalog/fields/age", json={"points_value": -1}, headers=steward)
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_input"
    r = client.get("/v1/catalog/fields/nope", headers=steward)
    assert r.status_code == 404
    assert r.json()["title"] == "Not found"
    r = client.delete("/v1/catalog/fields/age", headers=steward)
    assert r.json()["status"] == "retired"
    hist = client.get("/v1/catalog/fields/age/history", headers=steward).json()
    assert [h["change"] for h in hist] == ["created", "updated", "retired"]


def test_bulk_ingest_over_http_reports_row_errors(ctx, client):
    load_demo_catalog(ctx)
    steward = bearer(issue_token(ctx, "steward"))
    rows = [customer_row("H1"), customer_row("H2", age="old")]
    r = client.post("/v1/ingest", json={"rows": rows}, headers=steward)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["errors"] == [{"row": 2, "column": "age", "reason": "not an integer"}]
    csv_body = "customer_id,age,city\nH3,44,Suzhou\nH4,44,Mars\n"
    r = client.post("/v1/ingest/csv", content=csv_body, headers={**steward, "content-type": "text/csv"})
    assert r.json()["accepted"] == 1
    assert r.json()["errors"][0]["column"] == "city"
    partner = bearer(issue_token(ctx, "partner"))
    assert client.post("/v1/ingest", json={"rows": rows}, headers=partner).status_code == 403
    r = client.post("/v1/ingest", json={"rows": [{"customer_id": "x", "bogus": 1}]}, headers=steward)
    assert r.status_code == 422
    assert "bogus" in r.json()["detail"]


def test_partner_translations_reach_customers_and_only_known_ones_are_kept(ctx, client):
    load_demo_catalog(ctx)
    steward = bearer(issue_token(ctx, "steward"))
    customer = bearer(issue_token(ctx, "customer"))
    partners = {p["key"]: p for p in client.get("/v1/partners", headers=customer).json()}
    assert partners["harbor_insurance"]["i18n"]["zh-CN"]["name"] == "港湾保险"
    assert "续保" in partners["harbor_insurance"]["i18n"]["zh-CN"]["description"]

    # An update without i18n keeps the stored translations; one with i18n replaces them.
    body = {"key": "voltgrid", "name": "VoltGrid", "category": "charging", "description": "EV charging."}
    assert client.post("/v1/partners", json=body, headers=steward).status_code == 201
    volt = next(p for p in client.get("/v1/partners", headers=customer).json() if p["key"] == "voltgrid")
    assert volt["name"] == "VoltGrid"
    assert volt["i18n"]["zh-CN"]["name"] == "伏特电网充电"
    zh = {"zh-CN": {"name": "伏特充电", "description": "充电网络。"}}
    assert client.post("/v1/partners", json={**body, "i18n": zh}, headers=steward).status_code == 201
    volt = next(p for p in client.get("/v1/partners", headers=steward).json() if p["key"] == "voltgrid")
    assert volt["i18n"] == zh

    # Unknown languages or texts are refused (nothing stored), and only stewards write.
    for bad in (
        {"fr": {"name": "x"}},
        {"zh-CN": {"motto": "x"}},
        {"zh-CN": {"name": "x" * 201}},
        {"en": {"name": "x"}},
    ):
        r = client.post("/v1/partners", json={**body, "i18n": bad}, headers=steward)
        assert r.status_code == 422, bad
        assert r.json()["code"] == "invalid_input"
    assert client.post("/v1/partners", json={**body, "i18n": zh}, headers=customer).status_code == 403
    volt = next(p for p in client.get("/v1/partners", headers=steward).json() if p["key"] == "voltgrid")
    assert volt["i18n"] == zh
