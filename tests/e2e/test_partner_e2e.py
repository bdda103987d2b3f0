"""The partner view in Chromium: propose a contract from the catalog form (a transform finer than the field's
promise is refused inline), upload an ONNX model and see its signature check, submit a job only after a
confirmation that states the epsilon and the budget left (cancelling spends nothing), follow it, and read
the DP result as a chart with its noise interval; the budget meter. English at desktop width, Chinese at a
390 px phone width, never wider than the screen."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from dataspace.agreements.models import Contract, PrivacyBudget
from dataspace.jobs.models import Job
from dataspace.tlog.log import sequence
from tests.e2e.a11y import serious_violations
from tests.e2e.conftest import World, shot, sign_in
from tests.factories import jobs as js

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NO_OVERFLOW = "() => document.documentElement.scrollWidth <= window.innerWidth"


def _count(world: World, model: Any) -> int:
    with world.ctx.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _spent(world: World) -> int:
    with world.ctx.db.session() as s:
        return int(sum(s.scalars(select(PrivacyBudget.micro_epsilon_spent))))


def test_partner_proposes_uploads_submits_and_reads_the_chart(world: World, page: Any, tmp_path: Any) -> None:
    sign_in(page, world.base + "/partner/", world.analyst)
    contracts = page.locator("#contracts table")
    contracts.wait_for()
    text = contracts.inner_text()
    assert "Approved" in text
    assert "Age, in bands split at 30, 45, 60" in text
    assert "k_min" not in text
    assert "epsilon_per_release" not in text
    assert "{" not in text  # no JSON in cells
    assert page.evaluate(NO_OVERFLOW)
    assert not serious_violations(page), serious_violations(page)
    shot(page, "partner-contracts")

    # Propose: only the transforms the catalog allows; a finer one than promised is refused in place.
    page.get_by_role("tab", name="Propose a contract").click()
    assert page.locator("#pf-age-edges").count() == 0 or page.locator("#pf-age-edges").is_hidden()
    assert page.locator("#p-min").is_hidden()  # the range inputs only for "a number in a range"
    page.locator("#pf-age").check()
    transforms = page.locator("#pf-age-transform option").all_inner_texts()
    assert transforms
    page.locator("#pf-age-transform").select_option("bin")
    page.locator("#pf-age-edges").fill("45, 30")
    page.get_by_role("button", name="Propose contract").click()
    page.get_by_text("Each limit must be larger than the one before.").wait_for()
    assert page.locator("#pf-age-edges").get_attribute("aria-invalid") == "true"
    page.locator("#pf-age-edges").fill("30, 45, 60")
    page.locator("#p-title").fill("Renewal bundle by age")
    page.get_by_text("Each job spends this much of your privacy budget.", exact=False).wait_for()
    before = _count(world, Contract)
    page.get_by_role("button", name="Propose contract").click()
    page.locator("#propose-done").wait_for()
    assert _count(world, Contract) == before + 1
    with world.ctx.db.session() as s:
        proposed = s.scalars(select(Contract).order_by(Contract.id.desc())).first()
        assert proposed is not None
        assert (proposed.status, proposed.title) == ("proposed", "Renewal bundle by age")
        assert proposed.features == [{"field": "age", "transform": "bin", "edges": [30, 45, 60]}]
    assert page.evaluate(NO_OVERFLOW)
    assert not serious_violations(page), serious_violations(page)
    shot(page, "partner-propose")

    # Upload a model: its signature check shows.
    page.get_by_role("tab", name="Models").click()
    page.locator(f'#m-contract option[value="{world.contract_id}"]').wait_for(state="attached")
    page.locator("#m-contract").select_option(str(world.contract_id))
    model = tmp_path / "model.onnx"
    model.write_bytes(js.logistic_regression(js.WEIGHTS, js.BIAS))
    page.locator("#m-file").set_input_files(str(model))
    page.get_by_role("button", name="Upload and check").click()
    result = page.locator("#upload-result")
    result.wait_for()
    assert "passed its signature check" in result.inner_text()
    assert "3 features" in result.inner_text()
    page.locator("#models table").wait_for()
    shot(page, "partner-models")

    # Submit: the dialog states the cost and the budget left; cancelling spends and submits nothing.
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#j-model option").first.wait_for(state="attached")
    jobs_before, spent_before = _count(world, Job), _spent(world)
    page.get_by_role("button", name="Submit a job…").click()
    dialog = page.locator("#confirm")
    dialog.wait_for()
    said = dialog.inner_text()
    assert "spends ε 1 of your" in said
    assert "Left now: ε 10. After this job: ε 9." in said
    assert not serious_violations(page), serious_violations(page)
    shot(page, "partner-confirm")
    dialog.get_by_role("button", name="Cancel").click()
    assert (_count(world, Job), _spent(world)) == (jobs_before, spent_before)
    page.get_by_role("button", name="Submit a job…").click()
    dialog.get_by_role("button", name="Spend ε 1 and submit").click()
    page.locator("#job-status").get_by_text("submitted; ε 1 spent.", exact=False).wait_for()
    assert _count(world, Job) == jobs_before + 1
    assert _spent(world) == spent_before + 1_000_000
    with world.ctx.db.session() as s:
        job_id = int(s.scalar(select(func.max(Job.id))) or 0)
    page.locator("ol.steps li.current").first.wait_for()
    assert world.ctx.jobs.run_job(job_id).status == "succeeded"
    sequence(world.ctx.settings, world.ctx.db, world.ctx.keys, "audit")

    # Following the job: the page polls and shows the outcome, then the chart with its noise interval.
    show = page.locator(f'#jobs button[data-job="{job_id}"]')
    show.wait_for(timeout=20_000)
    show.click()
    page.locator("#result-chart canvas").wait_for()
    assert page.evaluate("() => !!window.Chart.getChart(document.querySelector('#result-chart canvas'))")
    panel = page.locator("#result").inner_text()
    assert "95% confidence" in panel
    assert "±2.996" in panel  # ln(20) / epsilon 1
    assert "standard" in panel
    assert _spent(world) == spent_before + 1_000_000  # reading the result spends nothing more
    assert page.evaluate(NO_OVERFLOW)
    assert not serious_violations(page), serious_violations(page)
    shot(page, "partner-result")

    page.get_by_role("tab", name="Privacy budget").click()
    page.locator("#budget meter").wait_for()
    assert "ε 9 of 10 left (1 spent)" in page.locator("#budget").inner_text()
    assert not serious_violations(page), serious_violations(page)
    shot(page, "partner-budget")

    # Chinese, at a phone's width: every tab fits the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#lang").select_option("zh-CN")
    page.get_by_role("tab", name="合约", exact=True).wait_for()
    tabs = [("合约", "contracts"), ("提议合约", "propose"), ("模型", "models")]
    tabs += [("任务", "jobs"), ("隐私预算", "budget")]
    for tab, name in tabs:
        page.get_by_role("tab", name=tab, exact=True).click()
        page.locator(f"#panel-{name} table, #panel-{name} fieldset, #panel-{name} meter").first.wait_for()
        assert page.evaluate(NO_OVERFLOW), name
        assert not serious_violations(page), serious_violations(page)
        shot(page, f"partner-{name}-zh-phone")
    assert "剩余 ε 9，共 10（已用 1）" in page.locator("#budget").inner_text()

    # The other two combinations: Chinese at desktop width, English on the phone (with the result chart).
    page.set_viewport_size({"width": 1100, "height": 900})
    page.get_by_role("tab", name="任务", exact=True).click()
    page.locator(f'#jobs button[data-job="{job_id}"]').click()
    page.locator("#result").get_by_text("95% 区间").first.wait_for()
    page.locator("#result-chart canvas").wait_for()
    assert page.evaluate(NO_OVERFLOW)
    shot(page, "partner-result-zh")
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#lang").select_option("en")
    for name in ("contracts", "jobs", "budget"):
        page.locator(f"#tab-{name}").click()
        page.locator(f"#panel-{name} table, #panel-{name} meter").first.wait_for()
        assert page.evaluate(NO_OVERFLOW), name
        shot(page, f"partner-{name}-phone")
