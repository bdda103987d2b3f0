"""Receipts name the real controller (operator configuration, validated at start), carry the lawful basis,
processing operations, notice and data source; the notice answers without a token; and what a customer is
shown about a grant is its state at read time (not when the expiry sweep last ran)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import consent
from clients.sdk import read_access_export
from dataspace.app import create_app
from dataspace.compliance.controller import DEMO_CONTROLLER, DEMO_ENV, controller_of
from dataspace.consents import changes as consent_changes
from dataspace.consents import queries as consent_queries
from dataspace.consents import receipts as consent_receipts
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import ConfigurationError
from dataspace.grants.models import ConsentReceipt
from dataspace.settings import Settings
from tests.conftest import TEST_CONTROLLER
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import bearer, issue_token, make_subject

AGE = {"field": "age", "purpose": "insurance_offer", "partner": "harbor_insurance"}


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    load_demo_catalog(ctx)
    with TestClient(create_app(ctx)) as c:
        yield c


def _with(ctx: Context, **changes: str | None) -> Context:
    return Context(settings=ctx.settings.model_copy(update=changes), db=ctx.db, keys=ctx.keys)


# --- §3: the controller's identity is configuration, validated at start -----------------------------------
def test_server_refuses_to_start_without_a_controller(ctx):
    bare = Context(settings=Settings(data_dir=ctx.settings.data_dir, database_url=ctx.db.url), db=ctx.db, keys=ctx.keys)
    with pytest.raises(ConfigurationError) as err:
        create_app(bare)
    for name in ("NAME", "ADDRESS", "EMAIL", "PHONE", "DPO", "JURISDICTION"):
        assert f"DATASPACE_CONTROLLER_{name} is not set" in str(err.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("controller_name", "Dataspace operator"),  # the old built-in placeholder
        ("controller_email", "privacy@operator.example"),
        ("controller_email", "privacy@example.com"),
        ("controller_dpo", "DPO <dpo@bank.invalid>"),
        ("controller_address", "TODO"),
        ("controller_notice_url", "https://example.org/privacy"),
        ("controller_notice_url", "http://bank.cn/privacy"),  # a configured notice must be https
        ("controller_jurisdiction", "China"),
        ("controller_phone", "call us"),
        ("controller_email", "not-an-address"),
        ("controller_name", "   "),
    ],
)
def test_server_refuses_to_start_with_a_placeholder_or_malformed_value(ctx, setting, value):
    with pytest.raises(ConfigurationError):
        create_app(_with(ctx, **{setting: value}))


def test_a_placeholder_cannot_hide_inside_the_demo_identity(ctx):
    """Only the demo's identity as a whole is accepted with its reserved domains: mixing one of its
    values into a real-looking identity is still a placeholder."""
    assert controller_of(
        _with(
            ctx,
            **{
                f"controller_{k}": getattr(DEMO_CONTROLLER, k)
                for k in ("name", "address", "email", "phone", "dpo", "jurisdiction")
            },
        ).settings
    ).is_demo
    with pytest.raises(ConfigurationError):
        create_app(_with(ctx, controller_email=DEMO_CONTROLLER.email))


def test_demo_environment_names_the_demo_controller(monkeypatch, tmp_path):
    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    controller = controller_of(Settings(data_dir=tmp_path))
    assert controller.is_demo
    assert "not a real controller" in controller.name


def test_receipts_name_the_configured_controller_basis_processing_notice_and_source(client, ctx):
    sid = make_subject(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    r = client.post("/v1/me/consents", json=AGE, headers=me)
    assert r.status_code == 201, r.text
    rid = r.json()["receipt_id"]
    receipt = client.get(f"/v1/me/receipts/{rid}", headers=me).json()
    keys = {k: base64.b64decode(v) for k, v in client.get("/v1/keys/receipts").json().items()}
    consent.verify_receipt(receipt, keys)  # everything below is under the signature

    (controller,) = receipt["pii_controllers"]
    assert controller == {
        "name": TEST_CONTROLLER["controller_name"],
        "contact": TEST_CONTROLLER["controller_email"],
        "email": TEST_CONTROLLER["controller_email"],
        "address": TEST_CONTROLLER["controller_address"],
        "phone": TEST_CONTROLLER["controller_phone"],
        "dpo": TEST_CONTROLLER["controller_dpo"],
        "url": ctx.settings.resolved_issuer + "/privacy",
    }
    assert receipt["jurisdiction"] == "CN"
    assert "operator.example" not in str(receipt)
    assert "Dataspace operator" not in str(receipt)
    (purpose,) = receipt["purposes"]
    assert purpose["lawful_basis"] == "dpv:Consent"
    ops = [o["operation"] for o in receipt["processing_operations"]]
    assert {"dpv:Store", "dpv:Pseudonymise", "dpv:Transform", "dpv:Analyse", "dpv:Aggregate"} <= set(ops)
    assert receipt["notice"]["url"] == ctx.settings.resolved_issuer + "/privacy"
    (pii,) = receipt["pii_information"]
    assert pii["data_source"]["collected_by"] == TEST_CONTROLLER["controller_name"]
    assert "know-your-customer" in pii["data_source"]["collection"]

    kantara = client.get(f"/v1/me/receipts/{rid}/kantara", headers=me).json()
    (k,) = kantara["piiControllers"]
    assert k["phone"] == TEST_CONTROLLER["controller_phone"]
    assert k["address"] == {"text": TEST_CONTROLLER["controller_address"]}
    assert k["email"] == TEST_CONTROLLER["controller_email"]
    assert kantara["policyUrl"] == ctx.settings.resolved_issuer + "/privacy"
    assert kantara["services"][0]["purposes"][0]["lawfulBasis"] == "dpv:Consent"


def test_lawful_basis_comes_from_the_catalog_purpose(client, ctx):
    sid = make_subject(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    body = {"field": "age", "purpose": "service_provision", "partner": "harbor_insurance"}
    r = client.post("/v1/me/consents", json=body, headers=me)
    assert r.status_code == 201, r.text
    receipt = client.get(f"/v1/me/receipts/{r.json()['receipt_id']}", headers=me).json()
    assert receipt["purposes"][0]["lawful_basis"] == "dpv:Contract"  # the demo catalog's basis for it
    m = client.get("/v1/me/consents", headers=me).json()
    assert {p["key"]: p["lawful_basis"] for p in m["purposes"]}["service_provision"] == "dpv:Contract"
    records = client.get("/v1/compliance/records-of-processing", headers=bearer(issue_token(ctx, "compliance"))).json()
    assert records["controller"]["name"] == TEST_CONTROLLER["controller_name"]
    assert {r["purpose"]: r["legal_basis"] for r in records["records"]}["service_provision"] == "dpv:Contract"


def test_configured_external_notice_url_is_the_receipts_policy_url(ctx):
    load_demo_catalog(ctx)
    own = _with(ctx, controller_notice_url="https://www.lakeside-bank.cn/privacy")
    with TestClient(create_app(own)) as c:
        sid = make_subject(own)
        me = bearer(issue_token(own, "customer", subject_id=sid))
        rid = c.post("/v1/me/consents", json=AGE, headers=me).json()["receipt_id"]
        assert c.get(f"/v1/me/receipts/{rid}/kantara", headers=me).json()["policyUrl"] == (
            "https://www.lakeside-bank.cn/privacy"
        )


def test_privacy_notice_answers_without_a_token(client):
    page = client.get("/privacy")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert TEST_CONTROLLER["controller_name"] in page.text
    assert "dpo@lakeside-bank.cn" in page.text
    doc = client.get("/privacy", headers={"Accept": "application/json"}).json()
    assert doc["controller"]["phone"] == TEST_CONTROLLER["controller_phone"]
    assert {p["key"]: p["lawful_basis"] for p in doc["purposes"]}["marketing"] == "dpv:Consent"


def test_privacy_notice_escapes_catalog_text(client, ctx):
    steward = bearer(issue_token(ctx, "steward"))
    body = {"key": "xss_probe", "label": "<script>alert(1)</script>", "dpv_term": "dpv:Marketing"}
    assert client.post("/v1/catalog/purposes", json=body, headers=steward).status_code in (200, 201)
    page = client.get("/privacy").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_erasure_and_expiry_receipts_name_the_controller(client, ctx):
    sid = make_subject(ctx)
    now = utcnow()
    with ctx.db.transaction() as s:
        consent_changes.grant(
            s,
            subject_id=sid,
            request=consent_changes.GrantRequest(**AGE, valid_until=now - timedelta(hours=1)),
            signer=ctx.keys.signing_key,
            clock=lambda: now - timedelta(hours=2),
            policy=consent_receipts.ReceiptPolicy(),
        )
    from dataspace.background import tasks

    (sweep,) = [t for t in tasks(ctx) if t.name == "consent-expiry"]
    sweep.run()
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    hist = client.get("/v1/me/consents/history", headers=me).json()
    assert hist[0]["kind"] == "expired"
    receipt = client.get(f"/v1/me/receipts/{hist[0]['receipt_id']}", headers=me).json()
    assert receipt["pii_controllers"][0]["name"] == TEST_CONTROLLER["controller_name"]

    # Erasure withdraws every grant, each with a receipt naming the controller too.
    r = client.post("/v1/me/consents", json=AGE, headers=me)
    assert r.status_code == 201, r.text
    assert client.delete("/v1/me", params={"confirm": "erase my data"}, headers=me).status_code == 200
    with ctx.db.session() as s:
        bodies = s.scalars(select(ConsentReceipt.body).where(ConsentReceipt.subject_id == sid)).all()
    assert len(bodies) == 4  # granted (back-dated), expired by the sweep, granted, withdrawn by the erasure
    names = [json.loads(b)["pii_controllers"][0]["name"] for b in bodies]
    # The first was made by this test through the service with its default policy; the server made the rest.
    assert names.count(TEST_CONTROLLER["controller_name"]) == 3


# --- §4: state at read time ---------------------------------------------------------------------------------
def _lapsed_grant(ctx: Context, sid: int) -> int:
    """A grant whose window ended an hour ago, which the expiry sweep has not materialized yet."""
    now = utcnow()
    with ctx.db.transaction() as s:
        change = consent_changes.grant(
            s,
            subject_id=sid,
            request=consent_changes.GrantRequest(**AGE, valid_until=now - timedelta(hours=1)),
            signer=ctx.keys.signing_key,
            clock=lambda: now - timedelta(hours=2),
        )
        return change.grant.id


def test_my_consents_show_a_lapsed_grant_as_expired_before_the_sweep(client, ctx):
    sid = make_subject(ctx)
    gid = _lapsed_grant(ctx, sid)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    m = client.get("/v1/me/consents", headers=me).json()
    (grant,) = [g for g in m["grants"] if g["id"] == gid]
    assert grant["state"] == "expired"
    assert not any(c["permitted"] for c in m["cells"])
    (event,) = client.get("/v1/me/consents/history", headers=me).json()
    assert (event["kind"], event["grant_state"]) == ("granted", "expired")
    kantara = client.get(f"/v1/me/receipts/{event['receipt_id']}/kantara", headers=me).json()
    assert kantara["consentStatus"] == "expired"
    export = read_access_export(client.get("/v1/me/export", headers=me).content.splitlines(keepends=True))
    assert [g["state"] for g in export["sections"]["consents"]] == ["expired"]


def test_a_grant_reads_expired_the_instant_it_ends(client, ctx):
    # The window is long enough for a busy machine to store the grant before it ends; the clock passed to the
    # query then stands one microsecond either side of the end.
    sid = make_subject(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    until = utcnow() + timedelta(minutes=5)
    r = client.post("/v1/me/consents", json={**AGE, "valid_until": until.isoformat()}, headers=me)
    assert r.status_code == 201, r.text
    with ctx.db.session() as s:
        m = consent_queries.matrix(s, subject_id=sid, clock=lambda: until + timedelta(microseconds=1))
    assert [g.state for g in m.grants] == ["expired"]
    with ctx.db.session() as s:
        m = consent_queries.matrix(s, subject_id=sid, clock=lambda: until - timedelta(microseconds=1))
    assert [g.state for g in m.grants] == ["active"]


def test_dataspace_serve_refuses_to_start_with_one_line(ctx, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dataspace.cli import app as cli_app
    from dataspace.keys import save_key_file

    save_key_file(tmp_path / "keys.json", ctx.keys)
    for key in list(TEST_CONTROLLER):
        monkeypatch.delenv(f"DATASPACE_{key.upper()}", raising=False)
    env = {
        "DATASPACE_DATA_DIR": str(tmp_path),
        "DATASPACE_DATABASE_URL": ctx.db.url,
        "DATASPACE_BIND": "127.0.0.1:1",  # never reached: it refuses before listening
        "DATASPACE_CONTROLLER_NAME": "Dataspace operator",
    }
    result = CliRunner().invoke(cli_app, ["serve"], env=env)
    assert result.exit_code == 1
    assert "DATASPACE_CONTROLLER_NAME is a placeholder" in result.output
    assert "DATASPACE_CONTROLLER_EMAIL is not set" in result.output
