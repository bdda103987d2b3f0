"""A compliance officer in the console: the action picker and a bad filter the server refuses (shown, not
ignored), system actions named after the process, an entry's detail with its inclusion proof verified in
the browser, the export verified with the key and the offline command beside it, access/erasure requests,
the dashboards and trend charts, the records of processing with controller and DPO, exported as CSV. English
at desktop width, Chinese at a 390 px phone width, never wider than the screen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dataspace.compliance import service as compliance
from dataspace.principal import Principal
from dataspace.tlog.log import sequence
from tests.e2e.a11y import serious_violations
from tests.e2e.conftest import World, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NO_OVERFLOW = "() => document.documentElement.scrollWidth <= window.innerWidth"


def _access_request(world: World) -> None:
    customer = Principal(subject=world.customer, role="customer", client_id="portal", subject_id=world.subject_id)
    with world.ctx.db.transaction() as s:
        compliance.log_access_request(s, subject_id=world.subject_id, actor=customer, export_format="jsonl")
    sequence(world.ctx.settings, world.ctx.db, world.ctx.keys, "audit")


def test_compliance_officer_filters_verifies_and_exports(world: World, page: Any) -> None:
    world.run_job()
    _access_request(world)
    sign_in(page, world.base + "/console/", world.auditor)
    page.locator("#audit-results table").wait_for()

    # A bad filter value: the server answers 422 and the page says so next to the field.
    page.get_by_label("Actor").fill("alice")
    page.get_by_role("button", name="Search").click()
    page.locator("#filter-error").wait_for()
    assert "not applied" in page.locator("#filter-error").inner_text()
    assert page.locator("#f-actor").get_attribute("aria-invalid") == "true"
    assert page.locator("#audit-results table").count() == 0
    shot(page, "console-bad-filter")

    # The action picker offers the recorded actions; system work is named after the process.
    page.get_by_label("Actor").fill("")
    page.locator('#f-action option[value="job.succeeded"]').wait_for(state="attached")
    page.locator("#f-action").select_option("job.succeeded")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function(
        "() => { const cells = [...document.querySelectorAll('#audit-results tbody tr td:nth-child(4)')];"
        " return cells.length > 0 && cells.every(td => td.innerText.startsWith('Job succeeded')); }"
    )
    assert "System: job runner" in page.locator("#audit-results tbody").inner_text()
    assert "anonymous" not in page.locator("#audit-results tbody").inner_text()
    assert page.locator("#f-actor").get_attribute("aria-invalid") is None
    assert not serious_violations(page), serious_violations(page)
    shot(page, "console-audit")

    # Entry detail: the signed entry and its inclusion proof, verified here.
    page.locator("#audit-results tbody tr").first.locator("button").click()
    verdict = page.locator("#proof-verdict")
    verdict.wait_for()
    assert verdict.inner_text().startswith("Verified in this browser"), verdict.inner_text()
    assert '"action": "job.succeeded"' in page.locator("#entry-body").inner_text()
    assert "✗" not in page.locator("#entry-body").inner_text()
    assert not serious_violations(page), serious_violations(page)
    shot(page, "console-entry")
    page.get_by_role("button", name="Close").click()

    page.get_by_role("tab", name="Export & verify").click()
    page.get_by_role("button", name="Export and verify").click()
    page.locator("#verify-result").wait_for()
    assert page.locator("#verify-result").inner_text().startswith("Verified")
    box = page.locator("#panel-export .verify-box")
    box.wait_for()
    assert "dataspace audit verify audit-export.jsonl --key '" in box.inner_text()
    assert page.locator("#panel-export .verify-key").count() >= 1
    assert not serious_violations(page), serious_violations(page)
    shot(page, "console-export")

    page.get_by_role("tab", name="Requests").click()
    page.locator("#requests table").wait_for()
    requests = page.locator("#requests").inner_text()
    assert "Access (copy of data)" in requests
    assert f"#{world.subject_id}" in requests
    assert not serious_violations(page), serious_violations(page)
    shot(page, "console-requests")

    page.get_by_role("tab", name="Dashboards").click()
    page.locator("#dash-jobs canvas").wait_for()
    page.locator("#dash-budgets canvas").wait_for()
    page.locator("#dash-requests canvas").wait_for()
    assert "Succeeded" in page.locator("#dash-jobs").inner_text()
    assert not serious_violations(page), serious_violations(page)
    shot(page, "console-dashboards")

    page.get_by_role("tab", name="Consent statistics").click()
    page.locator("#stats-trend canvas").wait_for()
    page.locator("#stats-chart canvas").wait_for()
    assert (
        page.evaluate("() => window.Chart.getChart(document.querySelector('#stats-trend canvas')).data.datasets.length")
        >= 1
    )
    assert "age" not in page.locator("#stats-table").inner_text().split()  # catalog labels, not keys
    assert not serious_violations(page), serious_violations(page)
    shot(page, "console-stats")

    page.get_by_role("tab", name="Records of processing").click()
    page.locator("#controller").wait_for()
    records = page.locator("#records").inner_text()
    assert "Data protection officer" in records
    assert "Security measures" in records
    assert "Transfers to other countries" in records
    assert "dataspace audit verify" in page.locator("#panel-records .verify-box").inner_text()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    csv_text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    header = csv_text.splitlines()[0].split(",")
    assert {"controller", "dpo", "international_transfers", "safeguards", "legal_basis"} <= set(header)
    assert len(csv_text.splitlines()) >= 2
    page.emulate_media(media="print")
    assert page.locator("nav[role=tablist]").is_hidden()  # the print layout shows the records only
    page.emulate_media(media="screen")
    assert not serious_violations(page), serious_violations(page)
    shot(page, "console-records")

    # Chinese, at a phone's width: every tab fits the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#lang").select_option("zh-CN")
    page.get_by_role("tab", name="审计查询").wait_for()
    tabs = [("审计查询", "audit"), ("导出与验证", "export"), ("客户请求", "requests")]
    tabs += [("仪表板", "dash"), ("授权统计", "stats"), ("处理活动记录", "records")]
    for tab, name in tabs:
        page.get_by_role("tab", name=tab, exact=True).click()
        page.wait_for_timeout(300)
        assert page.evaluate(NO_OVERFLOW), name
        assert not serious_violations(page), serious_violations(page)
        shot(page, f"console-{name}-zh-phone")
    records = page.locator("#records").inner_text()
    assert "个人信息保护负责人" in records
    # Catalog words in Chinese too: data categories (dimensions), recipients' kinds, purposes' descriptions.
    assert "身份信息" in records or "行为信息" in records or "资产信息" in records, records
    for english in ("identity", "behaviour", "assets", "insurer", "Running your accounts"):
        assert english not in records, english

    # The other two combinations: Chinese at desktop width, English on the phone.
    page.set_viewport_size({"width": 1100, "height": 900})
    page.get_by_role("tab", name="审计查询", exact=True).click()
    page.locator("#audit-results table").wait_for()
    assert "系统：任务执行器" in page.locator("#audit-results").inner_text() or page.locator("#audit-more").is_visible()
    assert page.evaluate(NO_OVERFLOW)
    shot(page, "console-audit-zh")
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#lang").select_option("en")
    for name in ("audit", "requests", "dash", "records"):
        page.locator(f"#tab-{name}").click()
        page.wait_for_timeout(300)
        assert page.evaluate(NO_OVERFLOW), name
        shot(page, f"console-{name}-phone")


def test_a_customer_cannot_use_the_console(world: World, page: Any) -> None:
    page.goto(world.base + "/console/")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("User name").fill(world.customer)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in and allow").click()
    page.get_by_text("This account cannot sign in to this application.").wait_for()
