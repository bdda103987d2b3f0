"""The collaboration dashboard's numbers (both databases): the steward's view is exact; a partner sees its own
deliveries exactly and numbers about customers only as DP releases charged to its privacy budget, stored and
shown again for free. Outcome events link to real-time decisions through an ``x-decision-ref`` field that
never reaches the partner."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dataspace.agreements.models import Contract, PrivacyBudget
from dataspace.app import create_app
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import BudgetExceeded, Conflict, InvalidInput, NotFound
from dataspace.events import contracts as event_contracts
from dataspace.events import dashboard, delivery
from dataspace.events.contract_models import CollaborationRelease, EventDelivery
from dataspace.realtime.models import RealtimeDecision
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token
from tests.integration.test_event_contracts import Receiver
from tests.integration.test_realtime import decision_contract

BOOKED, ACCEPTED = "battery_swap.booked", "renewal_offer.accepted"
SPENT = select(PrivacyBudget.micro_epsilon_spent)
CUSTOMERS = 12  # c00000..c00011: 8 consent to every feature, 4 do not


def booked_schema() -> dict:
    return {
        "type": "object",
        "required": ["booking_id"],
        "properties": {"booking_id": {"type": "string", "description": "The booking in the operator's app."}},
    }


def accepted_schema() -> dict:
    return {
        "type": "object",
        "required": ["decision_id", "offer"],
        "properties": {
            "decision_id": {
                "type": "integer",
                "x-decision-ref": True,
                "description": "The real-time decision whose offer the customer accepted.",
            },
            "offer": {"type": "string", "description": "The offer accepted."},
        },
    }


def event_contract(ctx: Context, event_type: str, schema: dict, retry: dict | None = None) -> int:
    with ctx.db.transaction() as s:
        c = event_contracts.propose(
            s,
            principal=js.steward("alice"),
            proposal=event_contracts.Proposal(
                event_type=event_type,
                version="1.0.0",
                title=event_type,
                description=f"{event_type} in the operator's app.",
                schema=schema,
                consumers=[js.PARTNER],
                latency_ms=60_000,
                retry=retry or {"backoff_seconds": 1, "multiplier": 1, "max_backoff_seconds": 1, "max_attempts": 2},
            ),
        )
        contract_id = c.id
    with ctx.db.transaction() as s:
        event_contracts.approve(s, principal=js.partner_principal(ctx), contract_id=contract_id)
    return contract_id


@pytest.fixture
def loop(ctx: Context):  # type: ignore[no-untyped-def]
    ctx.settings = ctx.settings.model_copy(update={"realtime_pool_size": 1, "webhook_allow_private": True})
    world = js.build_world(ctx, CUSTOMERS)
    contract_id = decision_contract(ctx, events=[BOOKED])
    js.upload_onnx(ctx, contract_id)
    booked = event_contract(ctx, BOOKED, booked_schema())
    accepted = event_contract(ctx, ACCEPTED, accepted_schema())
    receiver = Receiver(ctx)
    receiver.fail = False
    partner = js.partner_principal(ctx)
    assert partner.partner_id is not None
    with ctx.db.transaction() as s:
        delivery.subscribe(
            s, partner_id=partner.partner_id, url=receiver.url, event_types=[BOOKED, ACCEPTED], allow_private=True
        )
    client = TestClient(create_app(ctx))
    try:
        yield ctx, world, client, contract_id, booked, accepted, receiver
    finally:
        client.app.state.decisions.close()  # type: ignore[attr-defined]
        receiver.close()


def test_dashboard_numbers_exact_for_the_steward_dp_for_the_partner(loop) -> None:  # type: ignore[no-untyped-def]
    ctx, world, client, contract_id, booked, accepted, receiver = loop
    steward_h = bearer(issue_token(ctx, "steward"))
    partner = js.partner_principal(ctx)
    decisions = {}
    for i in range(CUSTOMERS):
        r = client.post(
            "/v1/events",
            json={
                "id": f"book-{i}",
                "type": BOOKED,
                "occurred_at": "2026-12-01T08:00:00Z",
                "customer_ref": f"c{i:05d}",
                "data": {"booking_id": f"b-{i}"},
            },
            headers=steward_h,
        )
        assert r.status_code == 201, r.text
        [answer] = r.json()["decisions"]
        decisions[i] = answer
    decided = [a for a in decisions.values() if a["outcome"] == "decided"]
    assert len(decided) == len(world.consenting) == 8
    assert sum(a["outcome"] == "not_permitted" for a in decisions.values()) == 4

    # The customer accepts three offers; an acceptance naming a refused decision is not an outcome.
    refused = next(a for a in decisions.values() if a["outcome"] == "not_permitted")
    bad = client.post(
        "/v1/events",
        json={
            "id": "acc-bad",
            "type": ACCEPTED,
            "occurred_at": "2026-12-01T08:01:00Z",
            "data": {"decision_id": refused["decision_id"], "offer": "premium"},
        },
        headers=steward_h,
    )
    assert bad.status_code == 422
    assert bad.json()["errors"] == [{"path": "data/decision_id", "problem": "no such decided real-time decision"}]
    for n, a in enumerate(decided[:3]):
        r = client.post(
            "/v1/events",
            json={
                "id": f"acc-{n}",
                "type": ACCEPTED,
                "occurred_at": "2026-12-01T08:01:00Z",
                "data": {"decision_id": a["decision_id"], "offer": str(a["decision"])},
            },
            headers=steward_h,
        )
        assert r.status_code == 201, r.text
    spec = client.get(
        f"/v1/partner/event-contracts/{accepted}/spec",
        params={"format": "md", "lang": "en"},
        headers=bearer(issue_token(ctx, "partner", partner_key=js.PARTNER)),
    )
    assert "never delivered to consumers" in spec.text  # the signed-off document says so
    with ctx.db.session() as s:  # the partner's copy never carries the operator's decision id
        copies = s.scalars(select(EventDelivery).where(EventDelivery.contract_id == accepted)).all()
        assert len(copies) == 3
        assert all(set(d.payload["data"]) == {"offer"} for d in copies)

    # One booking's delivery fails until it is dead-lettered (2 attempts).
    receiver.fail = True
    r = client.post(
        "/v1/events",
        json={"id": "book-x", "type": BOOKED, "occurred_at": "2026-12-01T08:02:00Z", "data": {"booking_id": "x"}},
        headers=steward_h,
    )
    assert r.status_code == 201
    with ctx.db.session() as s:
        dead_id = s.scalars(select(EventDelivery.id).order_by(EventDelivery.id.desc())).first()
    delivery.deliver_due(ctx.db, ctx.keys, now=utcnow() + timedelta(seconds=5), delivery_ids=[dead_id])
    receiver.fail = False

    # The steward: exact.
    w = dashboard.window(bucket="minute", until=utcnow() + timedelta(minutes=1))
    with ctx.db.session() as s:
        view = dashboard.steward_view(s, w)
    rows = {(d["contract_id"], d["partner_key"]): d for d in view["deliveries"]}
    book = rows[(booked, js.PARTNER)]["totals"]
    assert (book["events"], book["delivered"], book["dead"], book["retries"]) == (13, 12, 1, 1)
    assert book["success_rate"] == round(12 / 13, 4)
    assert book["latency_p50_ms"] is not None
    assert book["latency_p99_ms"] >= book["latency_p50_ms"]
    assert rows[(booked, js.PARTNER)]["latency_requirement_ms"] == 60_000
    assert rows[(booked, js.PARTNER)]["dropped_fields"] == {}  # the booking carries no customer data
    assert sum(p["events"] for p in rows[(booked, js.PARTNER)]["series"]) == 13
    [dec] = view["decisions"]
    assert (dec["contract_id"], dec["totals"]["decided"], dec["totals"]["not_permitted"]) == (contract_id, 8, 4)
    assert dec["totals"]["triggers"] == {BOOKED: 12}
    assert sum(p["decided"] for p in dec["series"]) == 8
    [out] = view["outcomes"]
    assert (out["event_type"], out["contract_id"], out["partner_key"]) == (ACCEPTED, contract_id, js.PARTNER)
    assert out["totals"] == {"outcomes": 3, "decisions_answered": 3, "conversion": round(3 / 8, 4)}

    # The partner: its deliveries exactly, no customer numbers until it asks for (and pays) a release.
    with ctx.db.session() as s:
        mine = dashboard.partner_view(s, w, principal=partner)
        budget_before = s.scalar(SPENT.where(PrivacyBudget.partner_id == partner.partner_id))
    assert {d["contract_id"] for d in mine["deliveries"]} == {booked, accepted}
    assert all("dropped_fields" not in d for d in mine["deliveries"])  # consent counts are about customers
    assert "decisions" not in mine
    assert "outcomes" not in mine
    [numbers] = mine["customer_numbers"]
    assert (numbers["contract_id"], numbers["releases"]) == (contract_id, [])

    now = utcnow() + timedelta(seconds=1)
    with ctx.db.transaction() as s:
        first = dashboard.release(s, principal=partner, contract_id=contract_id, now=now)
    with ctx.db.session() as s:
        spent = s.scalar(SPENT.where(PrivacyBudget.partner_id == partner.partner_id))
        start = s.get(CollaborationRelease, first["id"]).period_start  # type: ignore[union-attr]
        assert dashboard.exact_counts(s, contract_id, start, now) == (8, 3)  # what the noise was added to
    assert spent - budget_before == 200_000  # ε 0.2, in micro-epsilon
    assert first["epsilon"] == dashboard.RELEASE_EPSILON
    for value in (first["decided"], first["outcomes"]):  # noisy, or suppressed below k_min = 5
        assert value is None or (isinstance(value, int) and value >= 5)
    # Shown again for free: the same stored numbers, nothing more spent.
    with ctx.db.session() as s:
        again = dashboard.partner_view(s, w, principal=partner)["customer_numbers"][0]["releases"]
        assert s.scalar(SPENT.where(PrivacyBudget.partner_id == partner.partner_id)) == spent
    assert again == [first]
    # The next release covers only the time since; a budget that cannot pay releases nothing.
    with ctx.db.transaction() as s, pytest.raises(Conflict):
        dashboard.release(s, principal=partner, contract_id=contract_id, now=now)
    with ctx.db.transaction() as s:
        budget_row = s.scalars(select(PrivacyBudget).where(PrivacyBudget.partner_id == partner.partner_id)).one()
        budget_row.micro_epsilon_total = budget_row.micro_epsilon_spent + 100_000
    with ctx.db.transaction() as s, pytest.raises(BudgetExceeded):
        dashboard.release(s, principal=partner, contract_id=contract_id, now=now + timedelta(seconds=5))
    with ctx.db.session() as s:
        assert len(s.scalars(select(CollaborationRelease)).all()) == 1
    # A contract with a decision service that was never approved has nothing to release and is not listed.
    with ctx.db.transaction() as s:
        pending = s.get(Contract, js.propose(ctx))
        assert pending is not None
        pending.decision_service = {"events": [BOOKED]}
        pending_id = pending.id
    with ctx.db.transaction() as s, pytest.raises(Conflict):
        dashboard.release(s, principal=partner, contract_id=pending_id, now=now + timedelta(seconds=5))
    with ctx.db.session() as s:
        listed = dashboard.partner_view(s, w, principal=partner)["customer_numbers"]
    assert [g["contract_id"] for g in listed] == [contract_id]
    # Another partner cannot release (or see) this contract's numbers.
    other = js.partner_principal(ctx, "voltgrid")
    with ctx.db.transaction() as s, pytest.raises(NotFound):
        dashboard.release(s, principal=other, contract_id=contract_id, now=now + timedelta(seconds=5))
    with ctx.db.session() as s:
        theirs = dashboard.partner_view(s, w, principal=other)
    assert (theirs["deliveries"], theirs["customer_numbers"]) == ([], [])


def test_collaboration_over_http(loop) -> None:  # type: ignore[no-untyped-def]
    ctx, _world, client, contract_id, _booked, _accepted, _receiver = loop
    steward_h = bearer(issue_token(ctx, "steward"))
    partner_h = bearer(issue_token(ctx, "partner", partner_key=js.PARTNER))
    r = client.post(
        "/v1/events",
        json={
            "id": "book-1",
            "type": BOOKED,
            "occurred_at": "2026-12-01T08:00:00Z",
            "customer_ref": "c00001",
            "data": {"booking_id": "b-1"},
        },
        headers=steward_h,
    )
    assert r.status_code == 201
    r = client.get("/v1/steward/collaboration", params={"bucket": "minute"}, headers=steward_h)
    assert r.status_code == 200, r.text
    assert r.json()["decisions"][0]["totals"]["decided"] == 1
    assert client.get("/v1/steward/collaboration", headers=partner_h).status_code == 403
    assert client.get("/v1/steward/collaboration", params={"bucket": "week"}, headers=steward_h).status_code == 422
    r = client.get("/v1/partner/collaboration", headers=partner_h)
    assert r.status_code == 200
    assert r.json()["customer_numbers"][0]["releases"] == []
    r = client.post(f"/v1/partner/collaboration/{contract_id}/releases", headers=partner_h)
    assert r.status_code == 201, r.text
    assert client.get("/v1/partner/collaboration", headers=partner_h).json()["customer_numbers"][0]["releases"] == [
        r.json()
    ]
    assert client.post("/v1/partner/collaboration/999999/releases", headers=partner_h).status_code == 404
    with ctx.db.session() as s:
        assert s.scalar(select(RealtimeDecision.outcome)) == "decided"


def test_decision_references_are_checked_in_the_contract_schema(ctx: Context) -> None:
    js.build_world(ctx, 3)
    bad = {
        "type": "object",
        "properties": {
            "decision_id": {"type": "string", "x-decision-ref": True, "description": "Not an id."},
            "nested": {
                "type": "object",
                "description": "Nested.",
                "properties": {"d": {"type": "integer", "x-decision-ref": True, "description": "Too deep."}},
            },
        },
    }
    with ctx.db.transaction() as s, pytest.raises(InvalidInput) as err:
        event_contracts.propose(
            s,
            principal=js.partner_principal(ctx),
            proposal=event_contracts.Proposal(
                event_type="offer.accepted",
                version="1.0.0",
                title="t",
                description="d",
                schema=bad,
                consumers=["voltgrid"],
                producer=js.PARTNER,
            ),
        )
    problems = {(e["path"], e["problem"]) for e in err.value.extra["errors"]}
    assert ("decision_id", "x-decision-ref is true on an integer field (a decision id)") in problems
    assert ("nested.d", "a decision reference must be a top-level property") in problems
    assert ("decision_id", "only the operator links events to its decisions") in problems
