"""A compliance officer signs in to the console, searches the audit trail (with an inline message for a
bad filter), exports the log and sees it verified in the browser, then the consent statistics chart and
the records of processing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import World, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_compliance_officer_searches_exports_and_verifies(world: World, page: Any) -> None:
    world.run_job()
    sign_in(page, world.base + "/console/", world.auditor)
    page.locator("#audit-results table").wait_for()
    page.get_by_label("Subject id").fill("abc")
    page.get_by_role("button", name="Search").click()
    page.get_by_text("A subject id is a whole number.").wait_for()
    page.get_by_label("Subject id").fill("")
    page.get_by_label("Action").fill("job.*")
    page.get_by_role("button", name="Search").click()
    # Wait for the filtered results to replace the unfiltered first page (which also lists job.* rows).
    page.wait_for_function(
        "() => { const cells = [...document.querySelectorAll('#audit-results tbody tr td:nth-child(4)')];"
        " return cells.length > 0 && cells.every(td => td.innerText.startsWith('job.')); }"
    )
    page.locator("#audit-results").get_by_role("cell", name="job.succeeded").wait_for()
    actions = page.locator("#audit-results tbody tr td:nth-child(4)").all_inner_texts()
    assert actions
    assert all(a.startswith("job.") for a in actions), actions
    shot(page, "console-audit")

    page.get_by_role("tab", name="Export & verify").click()
    page.get_by_role("button", name="Export and verify").click()
    result = page.locator("#verify-result")
    result.wait_for()
    assert result.inner_text().startswith("Verified"), result.inner_text()
    page.get_by_text("Checkpoint signature verified with the operator's key.").wait_for()  # Ed25519 in WebCrypto
    shot(page, "console-export")

    page.get_by_role("tab", name="Consent statistics").click()
    page.locator("#stats-chart svg").wait_for()
    assert page.locator("#stats-chart rect.bar").count() >= 3
    shot(page, "console-stats")

    page.get_by_role("tab", name="Records of processing").click()
    page.locator("#records table").wait_for()
    assert page.locator("#records").get_by_text("Personalised insurance offers").count() >= 1
    shot(page, "console-records")


def test_a_customer_cannot_use_the_console(world: World, page: Any) -> None:
    page.goto(world.base + "/console/")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("User name").fill(world.customer)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in and allow").click()
    page.get_by_text("This account cannot sign in to this application.").wait_for()
