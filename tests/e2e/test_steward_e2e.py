"""Stewards sign in to the steward console (authorization code + PKCE): a sensitive contract approved by a
first steward says it still needs a second approver, and a second steward's approval makes it approved;
Python code is reviewed (source, checks) and approved; a budget is set; a field's Chinese text is edited;
the job queue and the request log are shown. In English and Chinese, at desktop width and at 390 px, where
no element may make the page wider than the screen, and axe-core finds no serious WCAG 2.1 AA violation."""

from __future__ import annotations

from typing import Any

import pytest

from dataspace.agreements.models import Contract, PrivacyBudget
from dataspace.catalog import service as catalog
from dataspace.jobs import uploads
from dataspace.partners.models import Partner
from tests.e2e.a11y import serious_violations
from tests.e2e.conftest import World, shot, sign_in
from tests.factories import jobs as js
from tests.factories.identities import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PYTHON_MODULE = "def score(rows):\n    return [{'label': 'offer', 'value': 1.0} for _ in rows]\n"


def _sensitive_contract(world: World) -> int:
    return js.propose(
        world.ctx,
        features=[
            *js.FEATURES,
            {"field": "health_condition", "transform": "group", "groups": {"chronic": ["diabetes", "asthma"]}},
        ],
    )


def _no_overflow(page: Any) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"page is {widths[0]} px wide on a {widths[1]} px screen"


def _sign_out(page: Any) -> None:
    page.locator("#signout").click()
    page.locator("#signin:not([hidden])").wait_for()


def test_two_stewards_approve_a_sensitive_contract_and_run_the_console(world: World, page: Any) -> None:
    first = make_user(world.ctx, "steward", username="e2e-steward-1").username
    second = make_user(world.ctx, "steward", username="e2e-steward-2").username
    contract_id = _sensitive_contract(world)
    job_id = world.run_job()

    sign_in(page, world.base + "/steward/", first)
    page.get_by_text("Signed in as e2e-steward-1").wait_for()
    card = page.locator(f"[data-contract='{contract_id}']")
    card.get_by_text("Sensitive: needs two different stewards to approve.").wait_for()
    card.get_by_role("button", name="Approve").click()
    card.get_by_text("Approved by e2e-steward-1; still needs a second approver (a different steward).").wait_for()
    assert card.get_by_text("Awaiting approval").count() == 1
    shot(page, "steward-contract-first-approval")
    # The same steward cannot count twice: the server refuses, the page says so, nothing changes.
    card.get_by_role("button", name="Approve").click()
    page.locator("#contracts-status .error").wait_for()
    _sign_out(page)

    sign_in(page, world.base + "/steward/", second)
    card = page.locator(f"[data-contract='{contract_id}']")
    card.get_by_role("button", name="Approve").click()
    card.wait_for(state="detached")  # no longer awaiting approval
    page.get_by_label("Show").first.select_option("")
    card = page.locator(f"[data-contract='{contract_id}']")
    card.get_by_text("Approved by e2e-steward-1, e2e-steward-2.").wait_for()
    card.get_by_text("Approved", exact=True).wait_for()

    # Python code: the source and the checks are shown; one steward approves (not a sensitive contract).
    with world.ctx.db.transaction() as s:
        model_id = uploads.upload(
            s,
            principal=js.partner_principal(world.ctx),
            contract_id=world.contract_id,
            kind="python",
            data=PYTHON_MODULE.encode(),
        ).id
    page.get_by_role("tab", name="Models").click()
    page.locator(f"[data-model='{model_id}']").get_by_role("button", name="Review").click()
    page.locator("pre.source").get_by_text("def score(rows):").wait_for()
    page.get_by_text("Valid Python that compiles (checked in an isolated process)").wait_for()
    assert serious_violations(page) == []
    page.locator("#review").get_by_role("button", name="Approve").click()
    page.locator("#review").get_by_text("Approved by e2e-steward-2 (1 of 1 needed).").wait_for()
    shot(page, "steward-model-review")

    page.get_by_role("tab", name="Privacy budgets").click()
    page.get_by_label("Partner").select_option(js.PARTNER)
    page.get_by_label("Purpose").select_option(js.PURPOSE)
    page.get_by_label("Total budget (ε)").fill("2000")
    page.get_by_role("button", name="Set budget").click()
    page.get_by_text("Enter a number between 0 and 1000.").wait_for()
    page.get_by_label("Total budget (ε)").fill("7.5")
    page.get_by_role("button", name="Set budget").click()
    page.get_by_text("Budget saved.").wait_for()
    page.locator("#budgets").get_by_role("cell", name="7.5", exact=True).wait_for()
    page.get_by_text("Now: 7.5 in total").wait_for()
    with world.ctx.db.session() as s:
        budget = (
            s.query(PrivacyBudget)
            .join(Partner, Partner.id == PrivacyBudget.partner_id)
            .filter(Partner.key == js.PARTNER, PrivacyBudget.purpose_key == js.PURPOSE)
            .one()
        )
        assert budget.micro_epsilon_total == 7_500_000

    page.get_by_role("tab", name="Data manual").click()
    page.locator("#fields details").first.wait_for()
    field = page.locator("form[data-edit='field:city']")
    page.locator("details", has=field).locator("summary").click()
    field.locator("#field-city-description-zh-CN").fill("您居住的城市（已修改）。")
    field.get_by_label("Points a customer earns for sharing it").fill("-5")
    field.get_by_role("button", name="Save").click()
    field.get_by_text("Enter a whole number from 0 to 1,000,000.").wait_for()
    field.get_by_label("Points a customer earns for sharing it").fill("75")
    field.get_by_role("button", name="Save").click()
    field.get_by_text("Saved.").wait_for()
    assert serious_violations(page) == []  # the manual with a field's editor open
    with world.ctx.db.session() as s:
        city = catalog.get_field(s, "city")
        assert city.i18n["zh-CN"]["description"] == "您居住的城市（已修改）。"
        assert city.version >= 2
        assert city.points_value == 75
    page.locator("#offers").get_by_role("cell", name="Personalised insurance offers").first.wait_for()
    page.locator("#partner-add summary").click()
    page.get_by_label("Short name (letters, digits, _)").fill("Bad Key")
    page.locator("#p-name").fill("Sunrise Payments")
    page.get_by_label("Kind (insurer, charging, payments …)").fill("payments")
    page.locator("#partner-form").get_by_role("button", name="Add a partner").click()
    page.get_by_text("Use lower-case letters, digits and _ (start with a letter).").wait_for()
    page.get_by_label("Short name (letters, digits, _)").fill("sunrise_pay")
    page.locator("#partner-form").get_by_role("button", name="Add a partner").click()
    page.get_by_text("Partner added.").wait_for()
    page.locator("#partners summary", has_text="Sunrise Payments · payments").wait_for()
    with world.ctx.db.session() as s:
        assert catalog.get_partner(s, "sunrise_pay").name == "Sunrise Payments"
    shot(page, "steward-manual")

    page.get_by_role("tab", name="Job queue").click()
    page.locator("#jobs tbody tr td:first-child", has_text=f"#{job_id}").first.wait_for()
    page.locator("#jobs").get_by_role("cell", name="Done").first.wait_for()
    # Revoking ends an offer; it takes two clicks.
    page.get_by_role("tab", name="Contracts").click()
    page.get_by_label("Show").first.select_option("")
    card = page.locator(f"[data-contract='{contract_id}']")
    card.get_by_role("button", name="Revoke…").click()
    card.get_by_text("No new job may start under this contract").wait_for()
    card.get_by_role("button", name="Yes, revoke").click()
    page.locator(f"[data-contract='{contract_id}']").get_by_text("Revoked", exact=True).wait_for()
    with world.ctx.db.session() as s:
        assert s.get(Contract, contract_id).status == "revoked"  # type: ignore[union-attr]
    page.get_by_role("tab", name="Access & erasure").click()
    page.locator("#requests p, #requests table").first.wait_for()
    shot(page, "steward-jobs-desktop")


@pytest.mark.parametrize(("lang", "width"), [("zh-CN", 390), ("en", 390), ("zh-CN", 1100)])
def test_console_in_both_languages_and_at_phone_width(world: World, page: Any, lang: str, width: int) -> None:
    steward = make_user(world.ctx, "steward", username="e2e-steward-phone").username
    _sensitive_contract(world)
    world.run_job()
    page.set_viewport_size({"width": width, "height": 800})
    sign_in(page, world.base + "/steward/", steward)
    page.locator("#lang").select_option(lang)
    title = "数据管理员控制台" if lang == "zh-CN" else "Steward console"
    page.locator("header h1", has_text=title).wait_for()
    page.locator("[data-contract] .two-person").first.wait_for()
    if lang == "zh-CN":
        page.get_by_text("敏感：需要两位不同的管理员批准。").wait_for()
    _no_overflow(page)
    assert serious_violations(page) == [], f"contracts {lang} {width}"
    shot(page, f"steward-contracts-{lang}-{width}")
    for tab in ("models", "budgets", "manual", "jobs", "requests"):
        page.locator(f"#tab-{tab}").click()
        panel = page.locator(f"#panel-{tab}")
        panel.locator("table, .card, details, p.muted").first.wait_for()
        if tab == "jobs":
            done = "已完成" if lang == "zh-CN" else "Done"
            page.locator("#jobs").get_by_role("cell", name=done, exact=True).first.wait_for()
        _no_overflow(page)
        assert serious_violations(page) == [], f"{tab} {lang} {width}"
        shot(page, f"steward-{tab}-{lang}-{width}")


def test_a_partner_cannot_use_the_steward_console(world: World, page: Any) -> None:
    page.goto(world.base + "/steward/")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("User name").fill(world.analyst)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in and allow").click()
    page.get_by_text("This account cannot sign in to this application.").wait_for()
