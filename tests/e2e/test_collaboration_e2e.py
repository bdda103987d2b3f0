"""The collaboration dashboard in Chromium. A battery-swap booking loop runs through the real server (events
published over the API trigger real-time decisions in warm sandboxes; acceptances link back to decisions;
one delivery is dead-lettered). The steward console's Collaboration tab shows per partner and contract the
delivery success, latency against the requirement, retries and dead letters, decisions and joint outcomes,
as charts with the same numbers in tables; the partner view shows its own deliveries and, only after it
confirms spending privacy budget, a DP release of its customer numbers. English and Chinese, desktop and
390 px (nothing wider than the screen), and axe-core finds no serious WCAG 2.1 AA violation."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dataspace.agreements.models import PrivacyBudget
from dataspace.db import utcnow
from dataspace.events import delivery
from dataspace.events.contract_models import CollaborationRelease, EventDelivery
from tests.e2e.a11y import serious_violations
from tests.e2e.conftest import World, shot, sign_in
from tests.factories import jobs as js
from tests.factories.identities import bearer, issue_token, make_user
from tests.integration.test_collaboration import ACCEPTED, BOOKED, accepted_schema, booked_schema, event_contract
from tests.integration.test_event_contracts import Receiver
from tests.integration.test_realtime import decision_contract

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _no_overflow(page: Any) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"page is {widths[0]} px wide on a {widths[1]} px screen"


def _play_loop(world: World) -> tuple[int, int]:
    """Bookings for 12 customers through the API (8 consent: decided), 3 acceptances, 1 dead letter."""
    ctx = world.ctx
    contract_id = decision_contract(ctx, events=[BOOKED])
    js.upload_onnx(ctx, contract_id)
    booked = event_contract(ctx, BOOKED, booked_schema())
    event_contract(ctx, ACCEPTED, accepted_schema())
    receiver = Receiver(ctx)
    receiver.fail = False
    partner = js.partner_principal(ctx)
    assert partner.partner_id is not None
    with ctx.db.transaction() as s:
        delivery.subscribe(
            s, partner_id=partner.partner_id, url=receiver.url, event_types=[BOOKED, ACCEPTED], allow_private=True
        )
    steward = bearer(issue_token(ctx, "steward"))
    decided = []
    try:
        with httpx.Client(base_url=world.base, headers=steward, timeout=60) as api:
            for i in range(12):
                r = api.post(
                    "/v1/events",
                    json={
                        "id": f"book-{i}",
                        "type": BOOKED,
                        "occurred_at": "2026-12-01T08:00:00Z",
                        "customer_ref": f"c{i:05d}",
                        "data": {"booking_id": f"b-{i}"},
                    },
                )
                assert r.status_code == 201, r.text
                decided += [a for a in r.json()["decisions"] if a["outcome"] == "decided"]
            for n, a in enumerate(decided[:3]):
                r = api.post(
                    "/v1/events",
                    json={
                        "id": f"acc-{n}",
                        "type": ACCEPTED,
                        "occurred_at": "2026-12-01T08:01:00Z",
                        "data": {"decision_id": a["decision_id"], "offer": str(a["decision"])},
                    },
                )
                assert r.status_code == 201, r.text
            _wait(ctx, lambda s: _count(s, "delivered") == 15)  # sent at once after each publish
            receiver.fail = True
            r = api.post(
                "/v1/events",
                json={
                    "id": "book-x",
                    "type": BOOKED,
                    "occurred_at": "2026-12-01T08:02:00Z",
                    "data": {"booking_id": "x"},
                },
            )
            assert r.status_code == 201
        with ctx.db.session() as s:
            dead = s.scalars(select(EventDelivery.id).order_by(EventDelivery.id.desc())).first()

        def retried(s: Any) -> bool:  # past the lease of an attempt still in flight, until dead-lettered
            delivery.deliver_due(ctx.db, ctx.keys, now=utcnow() + timedelta(seconds=120), delivery_ids=[dead])
            return _count(s, "dead") == 1

        _wait(ctx, retried)
    finally:
        receiver.close()
    assert len(decided) == 8
    return contract_id, booked


def _count(s: Any, status: str) -> int:
    return len(s.scalars(select(EventDelivery.id).where(EventDelivery.status == status)).all())


def _wait(ctx: Any, done: Any) -> None:
    deadline = time.monotonic() + 60
    while True:
        with ctx.db.session() as s:
            if done(s):
                return
        assert time.monotonic() < deadline, "the deliveries did not settle"
        time.sleep(0.1)


def test_steward_and_partner_see_the_loop(world: World, page: Any) -> None:
    contract_id, booked = _play_loop(world)
    steward = make_user(world.ctx, "steward", username="e2e-collab-steward").username
    sign_in(page, world.base + "/steward/", steward)
    page.get_by_role("tab", name="Collaboration").click()
    page.get_by_label("Time range").select_option("hour")
    card = page.locator(f"#collab-deliveries [data-contract='{booked}']")
    card.get_by_role("heading", name=f"{BOOKED} 1.0.0").wait_for()
    facts = card.locator("dl.facts")
    assert facts.locator("dt", has_text="Delivery success").count() == 1
    assert facts.locator("dd").nth(0).inner_text() == "92.3%"  # 12 of 13 delivered, 1 dead letter
    assert "(at most 60,000 ms)" in facts.locator("dd").nth(1).inner_text()
    assert facts.locator("dd").nth(5).inner_text() == "1"  # dead letters
    card.get_by_role(
        "img", name=f"Deliveries, retries and dead letters over time: Harbor Insurance · {BOOKED} 1.0.0"
    ).wait_for()
    # The dead letter, replayed from the card.
    card.get_by_role("button", name="Dead letters (1)").click()
    dead_row = card.locator(".dead-letters tbody tr")
    dead_row.get_by_role("cell", name="book-x", exact=True).wait_for()
    dead_row.get_by_role("cell", name="http_503", exact=True).wait_for()
    assert serious_violations(page) == []
    dead_row.get_by_role("button", name="Replay").click()
    dead_row.get_by_text("Queued for delivery again.").wait_for()
    with world.ctx.db.session() as s:
        replayed = s.scalars(select(EventDelivery).where(EventDelivery.replays == 1)).one()
        assert replayed.payload["id"] == "book-x"
    loop = page.locator(f"#collab-loop [data-decision-contract='{contract_id}']")
    loop_facts = loop.locator("dl.facts")
    loop_facts.wait_for()
    texts = dict(
        zip(loop_facts.locator("dt").all_inner_texts(), loop_facts.locator("dd").all_inner_texts(), strict=True)
    )
    assert texts["Decisions made"] == "8"
    assert texts["Not permitted (no consent)"] == "4"
    assert texts[f"Outcomes: {ACCEPTED}"] == "3"
    assert texts["Decisions with a joint outcome"] == "37.5%"
    loop.locator("details.numbers summary").click()
    assert loop.locator("tbody tr").count() >= 1
    assert serious_violations(page) == []
    shot(page, "collaboration-steward-en")
    page.locator("#lang").select_option("zh-CN")
    page.locator("#panel-collab h2", has_text="协作看板").wait_for()
    page.locator("#collab-loop dt", has_text="已做决策").wait_for()
    assert serious_violations(page) == []
    page.set_viewport_size({"width": 390, "height": 800})
    page.locator("#collab-refresh").click()
    page.locator("#collab-loop dt", has_text="已做决策").wait_for()
    _no_overflow(page)
    assert serious_violations(page) == []
    shot(page, "collaboration-steward-zh-390")

    # The partner: its deliveries exactly; customer numbers only after confirming the budget spend.
    page.locator("#signout").click()
    page.set_viewport_size({"width": 1100, "height": 900})
    page.locator("#lang").select_option("en")
    sign_in(page, world.base + "/partner/", world.analyst)
    page.get_by_role("tab", name="Collaboration").click()
    page.locator(f"#collab-deliveries [data-contract='{booked}']").get_by_role(
        "heading", name=f"{BOOKED} 1.0.0"
    ).wait_for()
    releases = page.locator(f"#collab-releases [data-release-contract='{contract_id}']")
    releases.get_by_text("No numbers released yet.").wait_for()
    assert page.locator("#collab-loop").count() == 0  # no exact decision counts in the partner view
    assert serious_violations(page) == []
    with world.ctx.db.session() as s:
        spent = s.scalar(select(PrivacyBudget.micro_epsilon_spent).where(PrivacyBudget.purpose_key == js.PURPOSE))
    releases.get_by_role("button", name="Release new numbers (ε 0.2)").click()
    page.locator("#confirm").get_by_role("button", name="Release new numbers (ε 0.2)").click()
    releases.get_by_role("img", name="Released numbers (with noise) per period: Contract").wait_for()
    page.get_by_text("New numbers released.").wait_for(state="attached")
    with world.ctx.db.session() as s:
        assert (
            s.scalar(select(PrivacyBudget.micro_epsilon_spent).where(PrivacyBudget.purpose_key == js.PURPOSE))
            == spent + 200_000
        )
        assert len(s.scalars(select(CollaborationRelease)).all()) == 1
    releases.locator("details.numbers summary").click()
    assert releases.locator("tbody tr").count() == 1
    assert serious_violations(page) == []
    shot(page, "collaboration-partner-en")
    page.set_viewport_size({"width": 390, "height": 800})
    page.locator("#lang").select_option("zh-CN")
    page.locator("#panel-collab h2", has_text="协作看板").wait_for()
    _no_overflow(page)
    assert serious_violations(page) == []
    shot(page, "collaboration-partner-zh-390")
