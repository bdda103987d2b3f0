"""A customer signs in to the portal (authorization code + PKCE in a real browser), withdraws one
consent, and the partner job that follows no longer uses that field: the usage ledger shows it. Then
points and redemption, receipts, export, the erasure form's inline validation, language and phone width."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clients.sdk import read_access_export
from dataspace.consents.models import ConsentGrant
from dataspace.usage import usage_for_subject
from tests.e2e.conftest import World, shot, sign_in
from tests.integration import jobs_support as js

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
WITHDRAWN = "app_sessions_30d"


def _uses(world: World) -> dict[str, set[int]]:
    with world.ctx.db.session() as s:
        return {f.field: {int(u.job_id) for u in f.uses} for f in usage_for_subject(s, world.subject_id)}


def _switch(page: Any, field: str) -> Any:
    return page.locator(f"#sw-{field}-{js.PURPOSE}-{js.PARTNER}")


def test_customer_withdraws_and_the_next_job_does_not_use_the_field(world: World, page: Any) -> None:
    first_job = world.run_job()
    assert _uses(world) == {f: {first_job} for f in js.FIELDS}

    sign_in(page, world.base + "/portal/", world.customer)
    page.locator(f"#field-{WITHDRAWN} > summary").click()
    switch = _switch(page, WITHDRAWN)
    assert switch.is_checked()
    shot(page, "portal-manual")
    switch.press("Space")  # keyboard operable
    selector = f"#sw-{WITHDRAWN}-{js.PURPOSE}-{js.PARTNER}"
    page.wait_for_function(
        f"() => document.querySelector('{selector}').getAttribute('aria-checked') === 'false'"
        f" && !document.querySelector('{selector}').disabled"
    )
    with world.ctx.db.session() as s:
        states = {
            g.field_key: g.state
            for g in s.scalars(select(ConsentGrant).where(ConsentGrant.subject_id == world.subject_id))
        }
    assert states[WITHDRAWN] == "withdrawn"
    assert states["age"] == "active"

    second_job = world.run_job()
    uses = _uses(world)
    assert uses[WITHDRAWN] == {first_job}  # the job after the withdrawal did not use it...
    assert second_job not in uses["age"]  # ...nor any field of this customer: the contract needs all three

    page.get_by_role("tab", name="How my data was used").click()
    entries = page.locator("ol.timeline > li")
    entries.first.wait_for()
    assert entries.count() == 1  # one use (the first job), naming the three fields it read
    assert page.locator(f"ol.timeline > li[data-fields~={WITHDRAWN}]").count() == 1
    assert sorted(entries.first.get_attribute("data-fields").split()) == sorted(js.FIELDS)
    entries.first.get_by_role("button", name="Check proof").click()
    page.get_by_text("Proof checked").or_(page.locator("ol.timeline .error")).first.wait_for()
    assert page.get_by_text("Proof checked").count() == 1, page.locator("ol.timeline").inner_text()
    shot(page, "portal-usage")

    page.get_by_role("tab", name="History & receipts").click()
    page.locator("#history table").wait_for()
    assert page.get_by_role("cell", name="Withdrawn", exact=True).count() == 1
    assert page.get_by_role("cell", name="Ended (withdrawn)").count() >= 2  # the grant's state now, on each event
    with page.expect_download() as download:
        page.get_by_role("button", name="Download signed receipt").first.click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert "signature" in receipt
    shot(page, "portal-history")


def test_redemption_updates_the_balance(world: World, page: Any) -> None:
    world.run_job()
    sign_in(page, world.base + "/portal/", world.customer)
    page.get_by_role("tab", name="Points & rewards").click()
    page.locator("[data-reward=coffee]").wait_for()
    before = int(page.locator("#balance").inner_text().replace(",", ""))
    assert before >= 2
    assert page.get_by_role("button", name="Redeem Airport lounge").is_disabled()
    page.get_by_role("button", name="Redeem Coffee voucher").click()
    page.get_by_text("Redeemed Coffee voucher").wait_for()
    page.wait_for_function(f"() => document.querySelector('#balance').textContent.replace(',', '') === '{before - 2}'")
    assert page.locator("#redemptions").get_by_text("Coffee voucher").count() == 1
    shot(page, "portal-points")


def test_account_export_erasure_validation_language_and_phone(world: World, page: Any) -> None:
    sign_in(page, world.base + "/portal/", world.customer)
    page.get_by_role("tab", name="My account").click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download my data").click()
    with Path(download.value.path()).open("rb") as fh:
        exported = read_access_export(fh)  # JSON Lines, checked against its manifest
    assert exported["header"]["subject"]["id"] == world.subject_id
    assert exported["manifest"]["counts"]["consent_events"] >= 1
    page.get_by_label("Type ERASE to confirm").fill("erase")
    page.get_by_role("button", name="Erase my account").click()
    page.get_by_text("Type the word ERASE exactly to confirm.").wait_for()
    assert page.get_by_label("Type ERASE to confirm").get_attribute("aria-invalid") == "true"
    shot(page, "portal-account")

    # The end date of a new permission must be in the future: an inline message, nothing sent.
    page.get_by_role("tab", name="Data manual").click()
    page.wait_for_load_state("networkidle")  # the manual re-renders when its data arrives; fill after that
    page.locator("#field-city > summary").click()
    page.locator("#until-city").fill("2001-01-01")
    _switch(page, "city").click()
    page.get_by_text("The end date must be in the future.").wait_for()
    assert not _switch(page, "city").is_checked()
    # The card shows the promise the server enforces on contracts, in plain words.
    promise = page.locator("#field-city dd.promise")
    assert promise.inner_text() == (
        "Shared with partners only as one of at most 3 groups, each covering at least 2 possible values; "
        "never as the exact value."
    )

    page.select_option("#lang", "zh-CN")
    page.get_by_role("tab", name="数据说明书").wait_for()
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.get_by_text("身份信息").first.wait_for()  # dimension label from the catalog's i18n (re-rendered)
    page.wait_for_function(
        "() => (document.querySelector('#field-city dd.promise') || {}).textContent"
        " === '仅以下列形式与合作伙伴共享：最多 3 个分组之一，每组至少涵盖 2 种可能取值；绝不共享确切数值。'"
    )
    page.set_viewport_size({"width": 360, "height": 780})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"horizontal scrolling at phone width ({width}px)"
    shot(page, "portal-phone-zh")


def test_pages_have_a_strict_csp_and_no_stack_traces(world: World, page: Any) -> None:
    response = page.goto(world.base + "/portal/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    missing = page.goto(world.base + "/portal/nope.html")
    assert missing.status == 404
    assert "Traceback" not in page.content()
