"""The catalog's promise (issue 13 part 3): each field declares the transforms it may leave under and their
minimum coarseness; catalog loading checks the promise, contract proposal and approval refuse anything
finer, and the data manual shows the same promise in plain words. Real server, real tokens, both databases.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dataspace.agreements import contracts
from dataspace.app import create_app
from dataspace.catalog import service as catalog
from dataspace.catalog.schemas import FieldUpdate
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import InvalidInput
from dataspace.jobs import service as jobs
from dataspace.jobs.models import Job
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token

PROBLEM = "application/problem+json"
SPEND = "monthly_card_spend"
# The attack from the issue: top-coding with a step of 10 sends nearly the exact amount (53 distinct values
# out of 200 subjects in the report); the demo catalog promises at most 9 values in steps of at least 1,000.
STEP_10 = {"field": SPEND, "transform": "topcode", "lower": 0, "upper": 8000, "step": 10}
LOOSE_SPEND = {"quantile": {"max_values": 4}, "topcode": {"max_values": 1000, "min_step": 10}}
DEMO_SPEND = {"quantile": {"max_values": 4}, "topcode": {"max_values": 9, "min_step": 1000}}


@pytest.fixture
def client(ctx: Context) -> TestClient:
    js.build_world(ctx, 30)
    return TestClient(create_app(ctx))


def proposal(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "purpose": js.PURPOSE,
        "features": features,
        "decision_schema": {"labels": js.LABELS},
        "k_min": 3,
        "epsilon_per_release": 1.0,
        "valid_until": (utcnow() + timedelta(days=30)).isoformat(),
    }


def with_spend(feature: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in js.FEATURES if f["field"] != SPEND] + [feature]


def assert_names_the_promise(r: Any, *, limits: set[str]) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert SPEND in body["detail"]
    assert "topcode" in body["detail"]
    errors = body["errors"]
    assert {e["limit"] for e in errors} == limits
    for e in errors:
        assert (e["field"], e["transform"]) == (SPEND, "topcode")
    by_limit = {e["limit"]: e for e in errors}
    if "min_step" in by_limit:
        assert (by_limit["min_step"]["allowed"], by_limit["min_step"]["requested"]) == (1000, 10)
    if "max_values" in by_limit:
        assert (by_limit["max_values"]["allowed"], by_limit["max_values"]["requested"]) == (9, 801)


def test_the_step_10_attack_is_refused_at_proposal(ctx: Context, client: TestClient) -> None:
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    r = client.post("/v1/partner/contracts", json=proposal(with_spend(STEP_10)), headers=partner)
    assert_names_the_promise(r, limits={"max_values", "min_step"})
    # A wide range at the allowed step is refused too: the count of values is the promise, not the step.
    wide = {**STEP_10, "upper": 1_000_000, "step": 1000}
    r = client.post("/v1/partner/contracts", json=proposal(with_spend(wide)), headers=partner)
    assert r.status_code == 422
    assert [(e["limit"], e["requested"]) for e in r.json()["errors"]] == [("max_values", 1001)]
    assert client.get("/v1/partner/contracts", headers=partner).json() == []


def test_a_contract_exactly_at_the_promise_passes(ctx: Context, client: TestClient) -> None:
    # js.FEATURES: spending in steps of 1,000 up to 8,000 (9 values), sessions in 4 quantiles: the limits.
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    steward = bearer(issue_token(ctx, "steward"))
    r = client.post("/v1/partner/contracts", json=proposal(js.FEATURES), headers=partner)
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/contracts/{r.json()['id']}/approve", headers=steward)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    # One more value (a 5th quantile) is over the promise.
    finer = [f if f["field"] != "app_sessions_30d" else {**f, "q": 5} for f in js.FEATURES]
    r = client.post("/v1/partner/contracts", json=proposal(finer), headers=partner)
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {
            "field": "app_sessions_30d",
            "feature": "app_sessions_30d",
            "transform": "quantile",
            "limit": "max_values",
            "allowed": 4,
            "requested": 5,
        }
    ]


def test_the_step_10_attack_is_refused_at_approval(ctx: Context, client: TestClient) -> None:
    """Proposed while the catalog was loose, approved after it tightened: approval checks today's promise."""
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    steward = bearer(issue_token(ctx, "steward"))
    r = client.patch(f"/v1/catalog/fields/{SPEND}", json={"transforms": LOOSE_SPEND}, headers=steward)
    assert r.status_code == 200, r.text
    r = client.post("/v1/partner/contracts", json=proposal(with_spend(STEP_10)), headers=partner)
    assert r.status_code == 201, r.text
    contract_id = r.json()["id"]
    r = client.patch(f"/v1/catalog/fields/{SPEND}", json={"transforms": DEMO_SPEND}, headers=steward)
    assert r.status_code == 200, r.text

    r = client.post(f"/v1/contracts/{contract_id}/approve", headers=steward)
    assert_names_the_promise(r, limits={"max_values", "min_step"})
    listed = {c["id"]: c for c in client.get("/v1/contracts", headers=steward).json()}
    assert listed[contract_id]["status"] == "proposed"
    assert listed[contract_id]["approvals"] == []  # the refused approval left nothing behind


def test_approval_refuses_in_the_service_too(ctx: Context) -> None:
    js.build_world(ctx, 6)
    with ctx.db.transaction() as s:
        catalog.update_field(s, SPEND, FieldUpdate.model_validate({"transforms": LOOSE_SPEND}))
    contract_id = js.propose(ctx, features=with_spend(STEP_10))
    with ctx.db.transaction() as s:
        catalog.update_field(s, SPEND, FieldUpdate.model_validate({"transforms": DEMO_SPEND}))
    with pytest.raises(InvalidInput, match="finer than the catalog promises"), ctx.db.transaction() as s:
        contracts.approve(s, principal=js.steward("alice"), contract_id=contract_id)
    with ctx.db.session() as s:
        assert contracts.get(s, contract_id=contract_id).status == "proposed"
        assert contracts.approvals(s, contract_id) == []


def test_the_manual_shows_the_promise_it_enforces(ctx: Context, client: TestClient) -> None:
    customer = bearer(issue_token(ctx, "customer"))
    steward = bearer(issue_token(ctx, "steward"))
    fields = {f["key"]: f for f in client.get("/v1/catalog/fields", headers=customer).json()}
    spend = fields[SPEND]
    assert spend["transforms"] == DEMO_SPEND
    assert spend["shared_as"]["en"] == (
        "Shared with partners only as one of at most 4 bands with about as many customers in each; or a value "
        "rounded down to steps of at least 1,000 and capped, one of at most 9 possible values; never as the "
        "exact value."
    )
    assert "最多 4 个人数大致相等的区间之一" in spend["shared_as"]["zh-CN"]
    assert "至少 1,000 的步长" in spend["shared_as"]["zh-CN"]
    assert fields["ev_owner"]["shared_as"] == {
        "en": "Shared with partners only as yes or no.",
        "zh-CN": "仅以下列形式与合作伙伴共享：是或否。",
    }
    city = fields["city"]["shared_as"]["en"]
    assert "one of at most 3 groups, each covering at least 2 possible values" in city
    # The manual (grouped by dimension) carries the same sentences.
    manual = client.get("/v1/catalog/manual", headers=customer).json()
    in_manual = {f["key"]: f["shared_as"] for d in manual for f in d["fields"]}
    assert in_manual == {k: f["shared_as"] for k, f in fields.items()}
    # Generated from the declaration: change the promise and the words change with it.
    quartiles_only = {"quantile": {"max_values": 4}}
    r = client.patch(f"/v1/catalog/fields/{SPEND}", json={"transforms": quartiles_only}, headers=steward)
    assert r.status_code == 200, r.text
    spend = client.get(f"/v1/catalog/fields/{SPEND}", headers=customer).json()
    assert spend["shared_as"]["en"] == (
        "Shared with partners only as one of at most 4 bands with about as many customers in each; never as "
        "the exact value."
    )
    partner = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    r = client.post("/v1/partner/contracts", json=proposal(js.FEATURES), headers=partner)
    assert r.status_code == 422  # the demo contract's topcode is no longer promised
    assert "not allowed by the catalog" in r.json()["detail"]


BASE_FIELD: dict[str, Any] = {
    "key": "shoe_size",
    "dimension": "identity",
    "label": "Shoe size",
    "description": "d",
    "collection_purpose": "p",
    "storage_location": "s",
    "sharing_scope": "x",
    "retention_days": 30,
    "data_type": "integer",
    "constraints": {"min": 30, "max": 50},
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"transforms": ["bin"]}, "bin needs max_values"),
        ({"transforms": {"quantile": {}}}, "quantile needs max_values"),
        ({"transforms": {"bin": {"max_values": 4, "min_step": 2}}}, "bin takes no min_step"),
        ({"transforms": {"group": {"max_values": 3}}}, "group does not apply to integer fields"),
        ({"transforms": {"identity": {}}, "sensitivity": "sensitive"}, "sensitive field may not be released as is"),
        ({"transforms": {"bin": {"max_values": 1}}}, "greater than or equal to 2"),
        ({"transforms": {"bin": {"max_values": 4, "min_width": 0}}}, "greater than 0"),
        ({"transforms": {"hash": {"max_values": 4}}}, "unknown transform"),
    ],
)
def test_catalog_loading_checks_the_promises(ctx: Context, change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as caught:
        catalog.parse_document({"fields": [{**BASE_FIELD, **change}]})
    assert caught.value.extra["errors"]


def test_a_steward_cannot_patch_a_promise_into_raw_release_of_a_sensitive_field(
    ctx: Context, client: TestClient
) -> None:
    steward = bearer(issue_token(ctx, "steward"))
    r = client.patch(
        "/v1/catalog/fields/health_condition",
        json={"transforms": {"identity": {}, "group": {"max_values": 2}}},
        headers=steward,
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "sensitive" in r.json()["detail"]
    body = copy.deepcopy(BASE_FIELD) | {"transforms": {"bin": {"max_values": 4, "min_width": 5}}}
    r = client.post("/v1/catalog/fields", json=body, headers=steward)
    assert r.status_code == 201, r.text
    assert r.json()["transforms"] == {"bin": {"max_values": 4, "min_width": 5.0}}


def test_a_job_under_a_contract_the_catalog_no_longer_allows_sends_nothing(ctx: Context) -> None:
    """Approved at the limit, then the steward tightens the promise: the emission refuses the next job."""
    js.build_world(ctx, 30)
    contract_id = js.approved_contract(ctx)
    model_id = js.upload_onnx(ctx, contract_id)
    coarser = {"quantile": {"max_values": 4}, "topcode": {"max_values": 5, "min_step": 2000}}
    with ctx.db.transaction() as s:
        catalog.update_field(s, SPEND, FieldUpdate.model_validate({"transforms": coarser}))
        job_id = jobs.submit(s, principal=js.partner_principal(ctx), model_id=model_id).id
    result = ctx.jobs.run_job(job_id)
    assert (result.status, result.error) == ("failed", "not_runnable")
    with ctx.db.session() as s:
        assert "finer than the catalog promises" in (s.get(Job, job_id).error_detail or "")  # type: ignore[union-attr]
    counts = js.counts(ctx)
    assert counts["decisions"] == counts["usage"] == 0
