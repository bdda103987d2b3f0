"""The consent API over HTTP with real tokens, and offline receipt verification with the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from dataspace.app import create_app
from dataspace.cli import app as cli_app
from dataspace.context import Context
from dataspace.db import utcnow
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import bearer, issue_token, make_subject

AGE = {"field": "age", "purpose": "insurance_offer", "partner": "harbor_insurance"}


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    load_demo_catalog(ctx)
    with TestClient(create_app(ctx)) as c:
        yield c


def customer(ctx: Context) -> tuple[int, dict[str, str]]:
    sid = make_subject(ctx)
    return sid, bearer(issue_token(ctx, "customer", subject_id=sid))


def test_toggle_history_receipts_and_matrix(client, ctx):
    _, me = customer(ctx)
    r = client.post("/v1/me/consents", json=AGE, headers=me)
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["changed"]
    assert grant["grant"]["state"] == "active"
    assert grant["grant"]["field"] == "age"
    again = client.post("/v1/me/consents", json=AGE, headers=me)
    assert again.status_code == 200
    assert not again.json()["changed"]
    assert again.json()["receipt_id"] == grant["receipt_id"]

    m = client.get("/v1/me/consents", headers=me).json()
    assert {f["key"]: f["points_value"] for f in m["fields"]}["age"] == 50
    purposes = {p["key"]: p for p in m["purposes"]}
    assert purposes["insurance_offer"]["i18n"]["zh-CN"]["label"] == "个性化保险推荐"  # the portal's language switch
    assert [c for c in m["cells"] if c["permitted"]] == [
        {
            "field": "age",
            "purpose": "insurance_offer",
            "partner": "harbor_insurance",
            "permitted": True,
            "grant_ids": [grant["grant"]["id"]],
        }
    ]

    gid = grant["grant"]["id"]
    r = client.post(
        f"/v1/me/consents/{gid}/renew", json={"valid_until": (utcnow() + timedelta(days=30)).isoformat()}, headers=me
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed"]
    w = client.delete(f"/v1/me/consents/{gid}", headers=me)
    assert w.status_code == 200
    assert w.json()["grant"]["state"] == "withdrawn"
    hist = client.get("/v1/me/consents/history", headers=me).json()
    assert [e["kind"] for e in hist] == ["withdrawn", "renewed", "granted"]
    assert next(e["state"] for e in hist) == "dpv:ConsentWithdrawn"

    receipt = client.get(f"/v1/me/receipts/{w.json()['receipt_id']}", headers=me)
    assert receipt.status_code == 200
    assert receipt.json()["state"] == "dpv:ConsentWithdrawn"
    kantara = client.get(f"/v1/me/receipts/{w.json()['receipt_id']}/kantara", headers=me).json()
    assert kantara["version"] == "KI-CR-v1.1.0"
    assert kantara["consentStatus"] == "withdrawn"
    assert kantara["publicKey"]


def test_receipt_verifies_offline_with_the_published_keys(client, ctx, tmp_path):
    _, me = customer(ctx)
    rid = client.post("/v1/me/consents", json=AGE, headers=me).json()["receipt_id"]
    keys = client.get("/v1/keys/receipts")  # public, no token
    assert keys.status_code == 200
    key_file = tmp_path / "keys.json"
    key_file.write_text(keys.text)
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_bytes(client.get(f"/v1/me/receipts/{rid}", headers=me).content)

    runner = CliRunner()
    ok = runner.invoke(cli_app, ["receipts", "verify", str(receipt_file), "--keys", str(key_file)])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output
    assert rid in ok.output

    doc = json.loads(receipt_file.read_text())
    doc["recipient_third_parties"].append({"partner": "someone_else"})
    receipt_file.write_text(json.dumps(doc))
    bad = runner.invoke(cli_app, ["receipts", "verify", str(receipt_file), "--keys", str(key_file)])
    assert bad.exit_code == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({**AGE, "field": "nope"}, 422),
        ({**AGE, "purpose": "nope"}, 422),
        ({**AGE, "partner": "nope"}, 422),
        ({**AGE, "dimension": "identity"}, 422),
        ({**AGE, "valid_until": "2001-01-01T00:00:00Z"}, 422),
        ({**AGE, "valid_until": "2999-01-01T00:00:00"}, 422),  # naive time
        ({**AGE, "granularity": "raw"}, 422),
        ({**AGE, "subject_id": 1}, 422),  # no smuggled fields
    ],
)
def test_bad_grants_are_problems(client, ctx, body, status):
    _, me = customer(ctx)
    r = client.post("/v1/me/consents", json=body, headers=me)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/me/consents/history", headers=me).json() == []


def test_other_customers_grants_are_not_found(client, ctx):
    _, alice = customer(ctx)
    _, bob = customer(ctx)
    g = client.post("/v1/me/consents", json=AGE, headers=alice).json()
    assert client.delete(f"/v1/me/consents/{g['grant']['id']}", headers=bob).status_code == 404
    assert client.post(f"/v1/me/consents/{g['grant']['id']}/renew", json={}, headers=bob).status_code == 404
    assert client.get(f"/v1/me/receipts/{g['receipt_id']}", headers=bob).status_code == 404
    assert client.get(f"/v1/me/receipts/{g['receipt_id']}/kantara", headers=bob).status_code == 404
    assert client.get("/v1/me/consents/history", headers=bob).json() == []


def test_stats_for_stewards_only(client, ctx):
    _, me = customer(ctx)
    client.post("/v1/me/consents", json=AGE, headers=me)
    assert client.get("/v1/consents/stats", headers=me).status_code == 403
    steward = bearer(issue_token(ctx, "steward"))
    r = client.get(
        "/v1/consents/stats",
        params={
            "field": "age",
            "purpose": "insurance_offer",
            "partner": "harbor_insurance",
            "step_hours": 24,
            "since": (utcnow() - timedelta(days=2)).isoformat(),
            "until": (utcnow() + timedelta(minutes=1)).isoformat(),
        },
        headers=steward,
    )
    assert r.status_code == 200, r.text
    series = r.json()["series"]
    assert [p["permitted"] for p in series] == [0, 0, 1]
    too_fine = {"step_hours": 1, "since": (utcnow() - timedelta(days=365)).isoformat()}
    r = client.get("/v1/consents/stats", params=too_fine, headers=steward)
    assert r.status_code == 422
    assert "time points" in r.json()["detail"]
    assert client.get("/v1/me/consents", headers=steward).status_code == 403
