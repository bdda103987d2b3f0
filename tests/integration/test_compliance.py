from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clients.sdk import read_access_export as read_export
from dataspace.app import create_app
from dataspace.auth.models import IssuedToken, User
from dataspace.compliance import service as compliance
from dataspace.compliance.models import SubjectRequest
from dataspace.consents import changes
from dataspace.consents import queries as consent_queries
from dataspace.errors import Conflict, NotFound
from dataspace.ingest.service import ingest_rows
from dataspace.principal import Principal
from dataspace.subjects.models import Subject
from dataspace.subjects.store import read_profile
from tests.factories.catalog import customer_row, load_demo_catalog
from tests.factories.identities import bearer, issue_token


def _subject(ctx, ref):
    with ctx.db.session() as s:
        return s.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index(ref)))


def _customer(ctx, ref="E1"):
    load_demo_catalog(ctx)
    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row(ref, city="Nanjing"), customer_row("OTHER")])
    sid = _subject(ctx, ref)
    with ctx.db.transaction() as s:
        for field in ("city", "age"):
            changes.grant(
                s,
                subject_id=sid,
                request=changes.GrantRequest(purpose="insurance_offer", field=field, partner="harbor_insurance"),
                signer=ctx.keys.signing_key,
            )
    return sid


@pytest.fixture
def client(ctx):
    with TestClient(create_app(ctx)) as c:
        yield c


def test_access_export_holds_everything_about_me_and_nothing_about_others(ctx, client):
    sid = _customer(ctx)
    token = issue_token(ctx, "customer", subject_id=sid)
    r = client.get("/v1/me/export", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    export = read_export(r.content.splitlines(keepends=True))
    doc = export["sections"]
    assert {p["field"]: p["value"] for p in doc["profile"]}["city"] == "Nanjing"
    assert {g["field"] for g in doc["consents"]} == {"city", "age"}
    assert len(doc["receipts"]) == 2
    assert all("signature" in str(rc) for rc in doc["receipts"])
    assert export["header"]["subject"]["id"] == sid
    with ctx.db.session() as s:
        log = s.scalars(select(SubjectRequest)).all()
    assert [(x.kind, x.subject_id) for x in log] == [("access", sid)]
    # Partners and stewards have no "me".
    assert client.get("/v1/me/export", headers=bearer(issue_token(ctx, "partner"))).status_code == 403


def test_erasure_shreds_withdraws_disables_and_is_logged(ctx, client):
    sid = _customer(ctx)
    token = issue_token(ctx, "customer", subject_id=sid)
    r = client.delete("/v1/me", params={"confirm": "yes"}, headers=bearer(token))
    assert r.status_code == 422
    assert "erase my data" in r.json()["detail"]
    r = client.delete("/v1/me", params={"confirm": "erase my data"}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["grants_withdrawn"] == 2
    assert r.json()["accounts_disabled"] == 1
    with ctx.db.session() as s:
        with pytest.raises(NotFound):
            read_profile(s, ctx.vault, sid)
        assert consent_queries.list_grants(s, subject_id=sid) == []
        assert all(g.state == "withdrawn" for g in consent_queries.list_grants(s, subject_id=sid, include_ended=True))
        assert s.scalar(select(User.disabled).where(User.subject_id == sid)) is True
        assert all(
            t.revoked_at is not None
            for t in s.scalars(select(IssuedToken)).all()
            if t.user_id is not None and s.get(User, t.user_id).subject_id == sid
        )
        # The other customer is untouched.
        assert read_profile(s, ctx.vault, _subject(ctx, "OTHER"))["age"] == 41
    # The revoked token no longer works.
    assert client.get("/v1/me/export", headers=bearer(token)).status_code == 401
    officer = bearer(issue_token(ctx, "compliance"))
    log = client.get("/v1/compliance/requests", headers=officer).json()
    assert [(x["kind"], x["outcome"]["grants_withdrawn"]) for x in log] == [("erasure", 2)]
    with ctx.db.transaction() as s, pytest.raises(Conflict):
        compliance.erase_subject(
            ctx.settings, ctx.keys, s, subject_id=sid, actor=Principal("x", "customer", "c", subject_id=sid)
        )


def test_records_of_processing_follow_the_catalog(ctx, client):
    load_demo_catalog(ctx)
    officer = bearer(issue_token(ctx, "compliance"))
    r = client.get("/v1/compliance/records-of-processing", headers=officer)
    assert r.status_code == 200
    records = {x["purpose"]: x for x in r.json()["records"]}
    assert records["marketing"]["dpv_purpose"] == "dpv:Marketing"
    assert records["insurance_offer"]["recipients"] == []  # no approved contract yet
    assert (
        client.get("/v1/compliance/records-of-processing", headers=bearer(issue_token(ctx, "partner"))).status_code
        == 403
    )
