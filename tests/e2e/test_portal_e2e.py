"""The customer portal in a real browser (authorization code + PKCE): the consent centre shows only the offers
that exist, by data, by partner and by purpose; a change shows its outcome and a receipt whose signature the
page checks; withdrawing everything from a partner; history in words; what we hold; points with tiers
explained, earning history and a confirmed redemption with a voucher code; erasure with a reference and
receipts; both languages, desktop and a 390 px phone without horizontal scrolling. Screenshots go to
test-artifacts/e2e/<backend>/."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clients.sdk import read_access_export
from dataspace.agreements import contracts
from dataspace.agreements.contracts import ContractProposal
from dataspace.compliance.models import SubjectRequest
from dataspace.db import utcnow
from dataspace.grants.models import ConsentGrant
from dataspace.points.models import Redemption
from dataspace.subjects.store import read_profile
from dataspace.usage import usage_for_subject
from tests.e2e.a11y import serious_violations
from tests.e2e.conftest import World, shot, sign_in
from tests.factories import jobs as js

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
WITHDRAWN = "app_sessions_30d"
VOLT = "voltgrid"
CHARGING = "charging_booking"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 900}


def _uses(world: World) -> dict[str, set[int]]:
    with world.ctx.db.session() as s:
        return {f.field: {int(u.job_id) for u in f.uses} for f in usage_for_subject(s, world.subject_id)}


def _switch(page: Any, field: str, purpose: str = js.PURPOSE, partner: str = js.PARTNER) -> Any:
    return page.locator(f"#sw-{field}-{purpose}-{partner}")


def _grant_states(world: World) -> dict[tuple[str | None, str | None], str]:
    with world.ctx.db.session() as s:
        rows = s.scalars(select(ConsentGrant).where(ConsentGrant.subject_id == world.subject_id))
        return {(g.field_key, g.partner_key): g.state for g in rows}


def _fits(page: Any, what: str) -> None:
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"{what}: horizontal scrolling at {inner}px ({width}px wide)"


def _propose_charging(world: World) -> None:
    """A second partner asks (proposed, not yet approved) for two fields for EV charging suggestions."""
    with world.ctx.db.transaction() as s:
        contracts.propose(
            s,
            principal=js.partner_principal(world.ctx, VOLT),
            proposal=ContractProposal(
                purpose=CHARGING,
                features=[
                    {"field": "ev_owner", "transform": "identity"},
                    {"field": "age", "transform": "bin", "edges": [30, 45, 60]},
                ],
                decision_schema={"labels": ["book", "wait"]},
                k_min=5,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=30),
                title="Charging-slot suggestions",
            ),
        )


def test_customer_withdraws_sees_the_receipt_and_the_next_job_does_not_use_the_field(world: World, page: Any) -> None:
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
    # A visible confirmation in words, with the receipt of the change.
    confirmation = page.locator("#confirmation")
    confirmation.wait_for()
    assert confirmation.get_attribute("role") == "status"
    assert "Harbor Insurance may no longer use your App sessions (30 days) for Personalised insurance offers" in (
        confirmation.inner_text()
    )
    states = _grant_states(world)
    assert states[WITHDRAWN, js.PARTNER] == "withdrawn"
    assert states["age", js.PARTNER] == "active"
    shot(page, "portal-withdrawn-confirmation")
    confirmation.get_by_role("button", name="View and check receipt").click()
    dialog = page.get_by_role("dialog", name="Signed receipt")
    dialog.wait_for()
    dialog.get_by_text("Signature checked in your browser").wait_for()  # Ed25519 over the canonical JSON
    assert "Permission withdrawn" in dialog.inner_text()
    with page.expect_download() as download:
        dialog.get_by_role("button", name="Download receipt").click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert receipt["state"] == "dpv:ConsentWithdrawn"
    assert serious_violations(page) == []  # the dialog and the confirmation too
    shot(page, "portal-receipt-dialog")
    page.keyboard.press("Escape")
    assert not dialog.is_visible()

    second_job = world.run_job()
    uses = _uses(world)
    assert uses[WITHDRAWN] == {first_job}  # the job after the withdrawal did not use it...
    assert second_job not in uses["age"]  # ...nor any field of this customer: the contract needs all three

    page.get_by_role("tab", name="How my data was used").click()
    entries = page.locator("ol.timeline > li")
    entries.first.wait_for()
    assert entries.count() == 1  # one use (the first job), naming the three fields it read
    assert sorted(entries.first.get_attribute("data-fields").split()) == sorted(js.FIELDS)
    entries.first.get_by_role("button", name="Check proof").click()
    page.get_by_text("Proof checked").or_(page.locator("ol.timeline .error")).first.wait_for()
    assert page.get_by_text("Proof checked").count() == 1, page.locator("ol.timeline").inner_text()
    shot(page, "portal-usage")

    # History in words: display names, no keys.
    page.get_by_role("tab", name="History & receipts").click()
    page.locator("#history table").wait_for()
    text = page.locator("#history").inner_text()
    withdrawal = "you withdrew Harbor Insurance's permission to use your App sessions (30 days) for Personalised"
    assert f"{withdrawal} insurance offers." in text
    assert "you allowed Harbor Insurance to use your Age for Personalised insurance offers." in text
    for key in (js.PARTNER, js.PURPOSE, WITHDRAWN, "·"):
        assert key not in text
    assert page.locator("#history tr[data-kind=withdrawn]").count() == 1
    assert page.get_by_role("cell", name="Ended (withdrawn)").count() >= 2  # the grant's state now, on each event
    page.locator("#history tr[data-kind=withdrawn]").get_by_role("button").click()
    page.get_by_role("dialog").get_by_text("Signature checked in your browser").wait_for()
    page.keyboard.press("Escape")
    shot(page, "portal-history")


def test_only_offers_that_exist_by_partner_and_purpose_and_withdraw_all(world: World, page: Any) -> None:
    _propose_charging(world)
    sign_in(page, world.base + "/portal/", world.customer)
    page.locator("#field-age").wait_for()
    # Five offers exist (three fields for the insurer, two for the charging network): five switches, not 120.
    assert page.locator("input[role=switch]").count() == 5
    assert page.locator("#field-city").inner_text().count("No partner asks") == 1
    page.locator("#field-age > summary").click()
    age = page.locator("#field-age")
    assert "1 of 2 allowed" in age.locator("summary").inner_text()
    assert "10 years" in age.locator("dd.retention").inner_text()  # not "3650 days"
    assert "A partner insurer decides which renewal or bundle to offer you." in age.inner_text()  # what you get
    assert "50 points the first time you share it" in age.inner_text()
    assert "not yet approved by the bank" in age.inner_text()  # the charging offer is only proposed
    assert _switch(page, "age", CHARGING, VOLT).is_visible()
    assert _switch(page, "age", "marketing", VOLT).count() == 0  # nobody offers it

    page.get_by_label("By purpose").check()
    page.locator(f"section[data-purpose={CHARGING}]").wait_for()
    assert page.locator("section.purpose-group").count() == 2
    charging = page.locator(f"section[data-purpose={CHARGING}]")
    assert "A charging network suggests when and where to book a charging slot." in charging.inner_text()
    assert "Charging-slot suggestions" in charging.inner_text()
    _switch(page, "ev_owner", CHARGING, VOLT).click()
    page.locator("#confirmation").get_by_text("VoltGrid Charging may now use your Electric-vehicle owner").wait_for()
    assert _grant_states(world)["ev_owner", VOLT] == "active"
    shot(page, "portal-by-purpose")

    page.get_by_label("By partner").check()
    harbor = page.locator(f"section[data-partner={js.PARTNER}]")
    harbor.wait_for()
    assert page.locator("section.partner-group").count() == 2
    assert "You allow this partner 3 uses of your data." in harbor.inner_text()
    withdraw = harbor.get_by_role("button", name="Withdraw everything from Harbor Insurance")
    withdraw.click()
    dialog = page.get_by_role("dialog", name="Withdraw everything from Harbor Insurance?")
    dialog.wait_for()
    assert "3 permissions end now" in dialog.inner_text()
    assert serious_violations(page) == []
    shot(page, "portal-withdraw-all-dialog")
    dialog.get_by_role("button", name="Cancel").click()  # asked first: cancelling changes nothing
    assert _grant_states(world)["age", js.PARTNER] == "active"
    withdraw.click()
    dialog.get_by_role("button", name="Withdraw all").click()
    confirmation = page.locator("#confirmation")
    confirmation.get_by_text("Done: 3 permissions for Harbor Insurance withdrawn.").wait_for()
    assert confirmation.get_by_role("button", name="View and check receipt").count() == 3  # one receipt each
    states = _grant_states(world)
    assert all(states[f, js.PARTNER] == "withdrawn" for f in js.FIELDS)
    assert states["ev_owner", VOLT] == "active"  # the other partner keeps its permission
    page.locator(f"section[data-partner={js.PARTNER}] button.danger:disabled").wait_for()
    shot(page, "portal-by-partner")
    confirmation.get_by_role("button", name="Close this confirmation").click()
    assert confirmation.is_hidden()


def test_what_we_hold_shows_the_customers_own_values(world: World, page: Any) -> None:
    with world.ctx.db.session() as s:
        held = read_profile(s, world.ctx.vault, world.subject_id)
    sign_in(page, world.base + "/portal/", world.customer)
    page.get_by_role("tab", name="What we hold").click()
    page.locator("#held table").wait_for()
    row = page.locator("#held tr[data-field=age]")
    assert row.locator("th").inner_text() == "Age"
    assert row.locator("td.held-value").inner_text() == str(held["age"])
    assert page.locator("#held tr[data-field=city] td.held-value").inner_text() == held["city"]
    assert page.locator("#held tr[data-field=ev_owner] td.held-value").inner_text() == (
        "Yes" if held["ev_owner"] else "No"
    )
    assert page.locator("#held tbody tr").count() == len(held)
    shot(page, "portal-held")


def test_points_tiers_earnings_and_a_confirmed_redemption_with_a_voucher(world: World, page: Any) -> None:
    world.run_job()
    sign_in(page, world.base + "/portal/", world.customer)
    page.get_by_role("tab", name="Points & rewards").click()
    page.locator("[data-reward=coffee]").wait_for()
    before = int(page.locator("#balance").inner_text().replace(",", ""))
    assert before >= 2
    tiers = page.locator("#tier-explained")
    assert "You are Bronze" in tiers.inner_text()
    assert "more points to reach Silver" in tiers.inner_text()
    assert "Silver: from 1,000 points earned" in tiers.inner_text()
    assert tiers.locator("li[aria-current=true]").inner_text().startswith("Bronze")
    earnings = page.locator("#earnings table")
    assert [h.inner_text() for h in earnings.locator("th").all()] == ["Date", "What for", "Points"]
    assert earnings.get_by_text("Bonus for sharing your Age").count() == 1
    assert earnings.get_by_text("Your data was used by an approved partner job").count() >= 1
    assert page.get_by_role("button", name="Redeem Airport lounge").is_disabled()

    redeem = page.get_by_role("button", name="Redeem Coffee voucher")
    redeem.click()
    dialog = page.get_by_role("dialog", name="Redeem Coffee voucher?")
    dialog.wait_for()
    assert f"Your balance after redeeming: {before - 2:,} points" in dialog.inner_text()
    assert serious_violations(page) == []
    dialog.get_by_role("button", name="Cancel").click()  # nothing charged without the confirmation
    with world.ctx.db.session() as s:
        assert s.scalars(select(Redemption)).first() is None
    redeem.click()
    dialog.get_by_role("button", name="Redeem for 2 points").click()
    page.get_by_text("Redeemed Coffee voucher").wait_for()
    code = page.locator("#voucher-code").inner_text()
    with world.ctx.db.session() as s:
        stored = s.scalars(select(Redemption)).one()
    assert code == stored.response["voucher_code"]
    page.wait_for_function(f"() => document.querySelector('#balance').textContent.replace(',', '') === '{before - 2}'")
    table = page.locator("#redemptions table")
    assert [h.inner_text() for h in table.locator("th").all()] == [
        "Date",
        "Reward",
        "Points spent",
        "Voucher code",
        "Status",
    ]
    assert table.get_by_text(code).count() == 1
    assert table.get_by_text("Coffee voucher").count() == 1
    assert page.locator("#earnings").get_by_text("Redeemed: Coffee voucher").count() == 1
    shot(page, "portal-points")


def test_export_validation_and_erasure_with_reference_and_receipts(world: World, page: Any) -> None:
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

    page.get_by_label("Type ERASE to confirm").fill("ERASE")
    page.get_by_role("button", name="Erase my account").click()
    page.get_by_text("Your account was erased.").wait_for()
    with world.ctx.db.session() as s:
        request = s.scalars(select(SubjectRequest).where(SubjectRequest.subject_id == world.subject_id)).all()[-1]
    assert page.locator("#erasure-reference").inner_text() == f"ER-{request.id:06d}"
    assert "3 permissions were withdrawn" in page.locator("#erasure-done").inner_text()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the erasure confirmation with its receipts").click()
    confirmation = json.loads(Path(download.value.path()).read_text())
    assert confirmation["reference"] == f"ER-{request.id:06d}"
    assert {r["receipt"]["state"] for r in confirmation["receipts"]} == {"dpv:ConsentWithdrawn"}
    assert len(confirmation["receipts"]) == 3
    shot(page, "portal-erased")


def test_end_date_must_be_in_the_future_and_the_promise_in_words(world: World, page: Any) -> None:
    sign_in(page, world.base + "/portal/", world.customer)
    page.locator("#field-age").wait_for()
    page.locator("#field-city > summary").click()
    promise = page.locator("#field-city dd.promise")
    assert promise.inner_text() == (
        "Shared with partners only as one of at most 3 groups, each covering at least 2 possible values; "
        "never as the exact value."
    )
    # The end date of a new permission must be in the future: an inline message, nothing sent.
    page.locator(f"#field-{WITHDRAWN} > summary").click()
    _switch(page, WITHDRAWN).click()  # withdraw first, then try to give it again with a past end date
    page.locator("#confirmation").wait_for()  # shown once the manual shows the new state
    page.locator(f"#until-{WITHDRAWN}").fill("2001-01-01")
    _switch(page, WITHDRAWN).click()
    page.get_by_text("The end date must be in the future.").wait_for()
    assert not _switch(page, WITHDRAWN).is_checked()


TABS = {
    "en": [
        "Data manual",
        "What we hold",
        "History & receipts",
        "How my data was used",
        "Points & rewards",
        "My account",
    ],
    "zh-CN": ["数据说明书", "我们持有的数据", None, None, None, None],
}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_tab_in_both_languages_fits_desktop_and_a_390px_phone(world: World, page: Any, lang: str) -> None:
    _propose_charging(world)
    world.run_job()
    sign_in(page, world.base + "/portal/", world.customer)
    page.locator("#field-age").wait_for()
    if lang != "en":
        page.select_option("#lang", lang)
        page.get_by_role("tab", name="数据说明书").wait_for()
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        page.get_by_text("身份信息").first.wait_for()  # dimension label from the catalog's i18n (re-rendered)
        page.wait_for_function(
            "() => (document.querySelector('#field-city dd.promise') || {}).textContent"
            " === '仅以下列形式与合作伙伴共享：最多 3 个分组之一，每组至少涵盖 2 种可能取值；绝不共享确切数值。'"
        )
        assert page.locator("#field-city dd.retention").text_content() == "10年"
    tabs = page.locator("[role=tab]")
    assert tabs.count() == 6
    for size, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(size)
        for i in range(tabs.count()):
            tab = tabs.nth(i)
            tab.click()
            panel = page.locator(f"#{tab.get_attribute('aria-controls')}")
            panel.wait_for()
            page.wait_for_load_state("networkidle")
            if TABS[lang][i]:
                assert tab.inner_text() == TABS[lang][i]
            tab_name = tab.get_attribute("data-tab")
            if tab_name == "manual":
                for view in ("field", "partner", "purpose"):
                    page.locator(f"input[name=view][value={view}]").check()
                    page.locator("input[role=switch]").first.wait_for(state="attached")
                    page.evaluate(
                        "document.querySelectorAll('#manual details.field').forEach((d) => { d.open = true; })"
                    )
                    _fits(page, f"{lang} {name} manual by {view}")
                    assert serious_violations(page) == [], f"{lang} {name} manual by {view}"
                    shot(page, f"portal-{lang}-{name}-manual-{view}")
                page.locator("input[name=view][value=field]").check()
            else:
                _fits(page, f"{lang} {name} {tab_name}")
                assert serious_violations(page) == [], f"{lang} {name} {tab_name}"
                shot(page, f"portal-{lang}-{name}-{tab_name}")
    if lang == "zh-CN":
        page.get_by_role("tab", name="积分与奖励").or_(page.locator("#tab-points")).first.click()
        page.locator("#tier-explained").get_by_text("铜卡").first.wait_for()
        page.get_by_role("tab", name="我们持有的数据").click()
        assert page.locator("#held th").first.inner_text() == "数据"
        page.locator("#held tr[data-field=age] th").get_by_text("年龄").wait_for()
        # The catalog's own texts are Chinese too (where it is kept), not the English ones.
        page.locator("#held tr[data-field=age]").get_by_text("运营方数据中心，上海（加密）").wait_for()
        assert "Operator data centre" not in page.locator("#held").inner_text()
        # Partners' names and descriptions are the catalog's Chinese ones as well.
        page.get_by_role("tab", name="数据说明书").click()
        page.locator("input[name=view][value=partner]").check()
        harbor = page.locator(f"section[data-partner={js.PARTNER}]")
        harbor.locator("h3").get_by_text("港湾保险").wait_for()
        harbor.get_by_text("车险与健康险保险公司", exact=False).first.wait_for()


def test_pages_have_a_strict_csp_and_no_stack_traces(world: World, page: Any) -> None:
    response = page.goto(world.base + "/portal/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    missing = page.goto(world.base + "/portal/nope.html")
    assert missing.status == 404
    assert "Traceback" not in page.content()
