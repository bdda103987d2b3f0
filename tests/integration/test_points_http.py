"""The points API over HTTP with real tokens: balance, statement, rewards, idempotent redemptions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.points import earning, invariants
from tests.factories.identities import bearer, issue_token, make_subject
from tests.integration.oauth_server import running_server


@pytest.fixture
def api(ctx: Context) -> Iterator[tuple[httpx.Client, Context]]:
    """A real server on 127.0.0.1 and a client for it, with the context whose issuer the server uses."""
    with running_server(ctx) as (base, served), httpx.Client(base_url=base, timeout=30) as client:
        yield client, served


def _earn(ctx: Context, subject_id: int, amount: int, field: str = "income") -> None:
    with ctx.db.transaction() as session:
        earning.award_authorization_bonus(session, subject_id=subject_id, field_key=field, points=amount, now=utcnow())


def test_customer_sees_balance_statement_and_redeems_idempotently(api: tuple[httpx.Client, Context]) -> None:
    client, ctx = api
    steward = bearer(issue_token(ctx, "steward"))
    r = client.post(
        "/v1/rewards",
        json={
            "key": "lounge",
            "name": "Airport lounge",
            "cost": 150,
            "stock": 2,
            "i18n": {"zh-CN": {"name": "机场贵宾厅"}},
        },
        headers=steward,
    )
    assert r.status_code == 201, r.text
    alice = make_subject(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=alice))
    _earn(ctx, alice, 100, "income")
    _earn(ctx, alice, 100, "city")

    r = client.get("/v1/me/points", headers=me)
    assert r.status_code == 200
    body = r.json()
    assert body["balance"] == 200
    assert body["tier"]["name"] == "bronze"
    assert [p["amount"] for p in body["recent"]] == [100, 100]
    assert client.get("/v1/rewards", headers=me).json()[0]["i18n"]["zh-CN"]["name"] == "机场贵宾厅"

    payload = {"reward_key": "lounge"}
    first = client.post("/v1/me/redemptions", json=payload, headers={**me, "Idempotency-Key": "abc-1"})
    assert first.status_code == 201, first.text
    assert first.json()["balance_after"] == 50
    again = client.post("/v1/me/redemptions", json=payload, headers={**me, "Idempotency-Key": "abc-1"})
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    clash = client.post(
        "/v1/me/redemptions", json={"reward_key": "lounge", "quantity": 2}, headers={**me, "Idempotency-Key": "abc-1"}
    )
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")
    poor = client.post("/v1/me/redemptions", json=payload, headers={**me, "Idempotency-Key": "abc-2"})
    assert poor.status_code == 409
    assert poor.json()["code"] == "insufficient_funds"

    assert [x["id"] for x in client.get("/v1/me/redemptions", headers=me).json()] == [first.json()["id"]]
    page = client.get("/v1/me/points/postings?limit=2", headers=me).json()
    assert [p["kind"] for p in page["items"]] == ["redemption", "authorization_bonus"]
    assert page["next_before"] is not None
    rest = client.get(f"/v1/me/points/postings?limit=2&before={page['next_before']}", headers=me).json()
    assert len(rest["items"]) == 1
    assert rest["next_before"] is None
    with ctx.db.session() as session:
        invariants.check_invariants(session)


def test_idempotency_key_is_required_and_validated(api: tuple[httpx.Client, Context]) -> None:
    client, ctx = api
    me = bearer(issue_token(ctx, "customer"))
    r = client.post("/v1/me/redemptions", json={"reward_key": "lounge"}, headers=me)
    assert r.status_code == 422
    r = client.post("/v1/me/redemptions", json={"reward_key": "lounge"}, headers={**me, "Idempotency-Key": "a b"})
    assert r.status_code == 422
    r = client.post("/v1/me/redemptions", json={"reward_key": "lounge"}, headers={**me, "Idempotency-Key": "x" * 129})
    assert r.status_code == 422
    r = client.post("/v1/me/redemptions", json={"reward_key": "lounge"}, headers={**me, "Idempotency-Key": "ok"})
    assert r.status_code == 404


def test_who_may_do_what(api: tuple[httpx.Client, Context]) -> None:
    client, ctx = api
    customer = bearer(issue_token(ctx, "customer"))
    steward = bearer(issue_token(ctx, "steward"))
    compliance = bearer(issue_token(ctx, "compliance"))
    reward = {"key": "mug", "name": "Mug", "cost": 10, "stock": 1}
    assert client.post("/v1/rewards", json=reward, headers=customer).status_code == 403
    assert client.post("/v1/rewards", json=reward, headers=compliance).status_code == 403
    assert client.post("/v1/rewards", json=reward).status_code == 401
    assert client.post("/v1/rewards", json=reward, headers=steward).status_code == 201
    r = client.patch("/v1/rewards/mug", json={"stock_delta": 4, "active": False}, headers=steward)
    assert r.status_code == 200
    assert r.json()["stock"] == 5
    assert client.get("/v1/rewards", headers=customer).json() == []
    listed = client.get("/v1/rewards?include_inactive=true", headers=steward).json()
    assert [x["key"] for x in listed] == ["mug"]
    assert client.get("/v1/rewards?include_inactive=true", headers=customer).json() == []
    assert client.get("/v1/rewards", headers=compliance).status_code == 200
    assert client.get("/v1/me/points", headers=steward).status_code == 403
    assert client.get("/v1/me/points").status_code == 401
