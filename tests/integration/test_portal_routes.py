"""The customer routes behind the consent centre, over HTTP with real tokens (both databases): the offers
that exist (proposed or approved contracts in force, nothing else), the customer's own values, a voucher code
per redemption, the tiers explained, and an erasure that hands back its reference and receipts."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

import consent
from dataspace.agreements import contracts
from dataspace.agreements.contracts import ContractProposal
from dataspace.compliance.models import SubjectRequest
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.points import earning, rewards
from dataspace.points.schemas import RewardCreate
from dataspace.subjects.models import Subject
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token
from tests.integration.oauth_server import running_server

VOUCHER = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$")


@pytest.fixture
def api(ctx: Context) -> Iterator[tuple[httpx.Client, Context]]:
    with running_server(ctx) as (base, served), httpx.Client(base_url=base, timeout=30) as client:
        yield client, served


def _propose(ctx: Context, partner: str, purpose: str, features: list[dict], *, days: int = 30, title: str = "") -> int:
    with ctx.db.transaction() as s:
        return contracts.propose(
            s,
            principal=js.partner_principal(ctx, partner),
            proposal=ContractProposal(
                purpose=purpose,
                features=features,
                decision_schema={"labels": ["book", "wait"]},
                k_min=5,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=days),
                title=title,
            ),
        ).id


def test_offers_list_only_contracts_in_force_grouped_by_partner_and_purpose(api: tuple[httpx.Client, Context]) -> None:
    client, ctx = api
    world = js.build_world(ctx, n=6)
    js.approved_contract(ctx)  # harbor_insurance x insurance_offer: age, app_sessions_30d, monthly_card_spend
    _propose(ctx, "voltgrid", "charging_booking", [{"field": "ev_owner", "transform": "identity"}], title="Slots")
    _propose(ctx, "voltgrid", "charging_booking", [{"field": "age", "transform": "bin", "edges": [30, 45, 60]}])
    rejected = _propose(ctx, "voltgrid", "marketing", [{"field": "ev_owner", "transform": "identity"}])
    with ctx.db.transaction() as s:
        contracts.reject(s, principal=js.steward(), contract_id=rejected, reason="no")
    me = bearer(issue_token(ctx, "customer", subject_id=world.subjects[0]))

    r = client.get("/v1/me/offers", headers=me)
    assert r.status_code == 200, r.text
    offers = {(o["partner"], o["purpose"]): o for o in r.json()}
    assert set(offers) == {("harbor_insurance", "insurance_offer"), ("voltgrid", "charging_booking")}
    harbor, volt = offers["harbor_insurance", "insurance_offer"], offers["voltgrid", "charging_booking"]
    assert harbor["fields"] == js.FIELDS
    assert harbor["approved"] is True
    assert harbor["partner_name"] == "Harbor Insurance"
    assert harbor["partner_i18n"]["zh-CN"]["name"] == "港湾保险"  # the demo catalog's Chinese texts
    assert volt["fields"] == ["ev_owner", "age"]  # both contracts' fields, once each
    assert volt["titles"] == ["Slots"]
    assert volt["approved"] is False  # only proposed so far

    # A partner or a steward is not a customer: the route is the customer's.
    partner = bearer(issue_token(ctx, "partner", partner_key="voltgrid"))
    assert client.get("/v1/me/offers", headers=partner).status_code == 403
    assert client.get("/v1/me/offers").status_code == 401


def test_profile_shows_the_customers_own_values_and_nobody_elses(api: tuple[httpx.Client, Context]) -> None:
    client, ctx = api
    world = js.build_world(ctx, n=3)
    first, second = world.subjects[0], world.subjects[1]
    r = client.get("/v1/me/profile", headers=bearer(issue_token(ctx, "customer", subject_id=first)))
    assert r.status_code == 200, r.text
    body = r.json()
    values = {v["field"]: v["value"] for v in body["values"]}
    assert values["age"] == 20  # row 0 of build_world
    assert values["app_sessions_30d"] == 0
    assert body["updated_at"] is not None
    other = client.get("/v1/me/profile", headers=bearer(issue_token(ctx, "customer", subject_id=second))).json()
    assert {v["field"]: v["value"] for v in other["values"]}["age"] == 27  # row 1: its own values only

    # A token without the usage scope cannot read it, nor can another role.
    narrow = bearer(issue_token(ctx, "customer", subject_id=first, scopes=["consents"]))
    assert client.get("/v1/me/profile", headers=narrow).status_code == 403
    assert client.get("/v1/me/profile", headers=bearer(issue_token(ctx, "steward"))).status_code == 403


def test_redemption_carries_a_fresh_voucher_code_kept_for_replays_and_the_list(
    api: tuple[httpx.Client, Context],
) -> None:
    client, ctx = api
    world = js.build_world(ctx, n=1)
    sid = world.subjects[0]
    with ctx.db.transaction() as s:
        rewards.create_reward(s, data=RewardCreate(key="coffee", name="Coffee", cost=5, stock=10))
        earning.award_authorization_bonus(s, subject_id=sid, field_key="income", points=50, now=utcnow())
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    first = client.post("/v1/me/redemptions", json={"reward_key": "coffee"}, headers={**me, "Idempotency-Key": "v-1"})
    assert first.status_code == 201, first.text
    code = first.json()["voucher_code"]
    assert VOUCHER.fullmatch(code), code
    replay = client.post("/v1/me/redemptions", json={"reward_key": "coffee"}, headers={**me, "Idempotency-Key": "v-1"})
    assert replay.json()["voucher_code"] == code  # a retry is the same redemption, not a second voucher
    second = client.post("/v1/me/redemptions", json={"reward_key": "coffee"}, headers={**me, "Idempotency-Key": "v-2"})
    assert second.json()["voucher_code"] != code
    listed = client.get("/v1/me/redemptions", headers=me).json()
    assert [r["voucher_code"] for r in listed] == [second.json()["voucher_code"], code]

    summary = client.get("/v1/me/points", headers=me).json()
    assert summary["tiers"] == [
        {"name": "bronze", "lifetime_points": 0},
        {"name": "silver", "lifetime_points": 1000},
        {"name": "gold", "lifetime_points": 5000},
    ]
    tier = summary["tier"]
    assert (tier["name"], tier["next_tier"]) == ("bronze", "silver")
    assert tier["points_to_next_tier"] == 1000 - summary["lifetime_earned"]
    assert summary["lifetime_earned"] >= 50  # spending never lowers it


def test_erasure_answers_with_its_reference_and_every_withdrawal_receipt(api: tuple[httpx.Client, Context]) -> None:
    client, ctx = api
    world = js.build_world(ctx, n=2)
    sid = world.subjects[1]  # granted all three contract fields
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    r = client.delete("/v1/me", params={"confirm": "erase my data"}, headers=me)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["erased"] is True
    assert body["grants_withdrawn"] == 3
    with ctx.db.session() as s:
        request = s.scalars(select(SubjectRequest).where(SubjectRequest.subject_id == sid)).one()
        assert s.get(Subject, sid) is not None
    assert body["reference"] == f"ER-{request.id:06d}"
    assert body["completed_at"]
    receipts = body["receipts"]
    assert len(receipts) == 3
    keys = {kid: base64.b64decode(k) for kid, k in client.get("/v1/keys/receipts").json().items()}
    for item in receipts:  # signed withdrawal receipts, verifiable offline with the public keys
        doc = consent.verify_receipt(item["receipt"], keys)
        assert doc["receipt_id"] == item["id"]
        assert doc["state"] == "dpv:ConsentWithdrawn"
    assert len({item["id"] for item in receipts}) == 3
    # The sign-in is over: the same token no longer works.
    assert client.get("/v1/me/profile", headers=me).status_code == 401
