"""The customer's linkage grant in the portal, in a real browser: the data manual shows "link my record with
<partner>'s records about me, for <purpose>" with what the partner brings and why; the customer grants it
(with a signed receipt), sees the link once the partner has run the matching, and withdraws it: the link is
removed and no later join uses the partner's records about them. axe-core finds no serious WCAG 2.1 AA
violation on the way (desktop and a 390 px phone). Screenshots go to test-artifacts/e2e/<backend>/."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from dataspace.grants.models import ConsentGrant
from dataspace.linkage import service as linkage
from dataspace.linkage.models import Link
from dataspace.subjects.store import store_profiles
from tests.e2e.a11y import serious_violations
from tests.e2e.conftest import World, shot, sign_in
from tests.factories import jobs as js
from tests.integration.test_linkage import SpecPartner, approved_contract, complete, message, pkeys, start

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PHONE = "+8613900000001"
SENTENCE = "Link my record with Harbor Insurance's records about me, for Personalised insurance offers"


def _linkage_grants(world: World) -> list[str]:
    with world.ctx.db.session() as s:
        rows = s.scalars(
            select(ConsentGrant).where(
                ConsentGrant.subject_id == world.subject_id, ConsentGrant.dimension_key == "linkage"
            )
        )
        return [g.state for g in rows]


def _linked(world: World) -> bool:
    with world.ctx.db.session() as s:
        return s.scalar(select(Link.subject_id).where(Link.subject_id == world.subject_id)) is not None


def _partner_run(world: World, contract_id: int) -> None:
    """The partner runs its side of the matching (from the protocol's specification, as in the API tests)."""
    ctx = world.ctx
    run = start(ctx, contract_id)
    records = [
        (PHONE, {"policy_expiry_month": 4, "claims_band": "none"}),
        ("+4930000001", {"policy_expiry_month": 1, "claims_band": "some"}),
    ]
    complete(ctx, run.id, SpecPartner().reply(run.id, run.public_key, message(ctx, run.id), records))


def test_customer_grants_sees_and_withdraws_the_linkage(world: World, page: Any) -> None:
    ctx = world.ctx
    with ctx.db.transaction() as s:  # the customer's phone number, the identifier the partner matches on
        store_profiles(s, ctx.vault, [("c00001", {"phone": PHONE})], ctx.keys.blind_index)
    contract_id = approved_contract(ctx)  # declares the partner's columns, approved with them

    sign_in(page, world.base + "/portal/", world.customer)
    section = page.locator("#linkage")
    section.wait_for()
    text = section.inner_text()
    assert SENTENCE in text
    assert "What Harbor Insurance brings" in text
    assert "month your policy with us expires" in text  # what the partner contributes, in its declared words
    assert "your phone number" in text  # matched on
    assert "No partner has linked records about you." in text
    switch = page.locator(f"#link-{js.PARTNER}-{js.PURPOSE}")
    assert not switch.is_checked()
    assert page.get_by_role("switch", name=SENTENCE).count() == 1  # the sentence is the switch's name
    assert serious_violations(page) == []
    shot(page, "portal-linkage-offer")

    switch.press("Space")  # keyboard operable
    confirmation = page.locator("#confirmation")
    confirmation.get_by_text("Harbor Insurance may now link its records about you").wait_for()
    assert _linkage_grants(world) == ["active"]
    assert confirmation.get_by_role("button", name="View and check receipt").count() == 1

    _partner_run(world, contract_id)
    assert _linked(world)
    page.reload()
    page.locator("#linkage-links li").first.wait_for()
    links = page.locator("#linkage-links").inner_text()
    assert "Harbor Insurance linked its records about you for Personalised insurance offers" in links
    assert "month your policy with us expires" in links
    assert page.locator(f"#link-{js.PARTNER}-{js.PURPOSE}").is_checked()
    assert serious_violations(page) == []
    shot(page, "portal-linkage-linked")
    page.set_viewport_size({"width": 390, "height": 844})
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner
    assert serious_violations(page) == []
    shot(page, "portal-linkage-phone")
    page.set_viewport_size({"width": 1100, "height": 900})

    # Withdrawal asks first (the link goes for good), then removes the link with a receipt.
    page.locator(f"#link-{js.PARTNER}-{js.PURPOSE}").press("Space")
    dialog = page.get_by_role("dialog", name="Stop linking with Harbor Insurance?")
    dialog.wait_for()
    assert serious_violations(page) == []
    dialog.get_by_role("button", name="Remove the link").click()
    page.locator("#confirmation").get_by_text("Harbor Insurance may no longer link its records about you").wait_for()
    page.get_by_text("No partner has linked records about you.").wait_for()
    assert not page.locator(f"#link-{js.PARTNER}-{js.PURPOSE}").is_checked()
    assert _linkage_grants(world) == ["withdrawn"]
    assert not _linked(world)
    with ctx.db.transaction() as s:  # no later job or decision joins the partner's values for this customer
        _, values = linkage.partner_columns(s, pkeys(ctx), contract_id=contract_id, subject_ids=[world.subject_id])
    assert values == {}
    shot(page, "portal-linkage-withdrawn")

    page.get_by_role("tab", name="History & receipts").click()
    page.locator("#history table").wait_for()
    history = page.locator("#history").inner_text()
    assert "you allowed Harbor Insurance to link its records about you for Personalised insurance offers." in history
    assert "you withdrew Harbor Insurance's permission to link its records about you for Personalised" in history

    # In Chinese: the grant in the reader's language, and still no serious accessibility violation.
    page.get_by_role("tab", name="Data manual").click()
    page.select_option("#lang", "zh-CN")
    page.get_by_role("tab", name="数据说明书").wait_for()
    page.locator("#linkage").get_by_text("希望带来其自有记录的合作伙伴").wait_for()
    assert "将我的记录与" in page.locator("#linkage").inner_text()
    assert "尚无合作伙伴关联关于您的记录。" in page.locator("#linkage").inner_text()
    assert serious_violations(page) == []
    shot(page, "portal-linkage-zh")
