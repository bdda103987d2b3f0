"""The partner view in Chromium: contracts, jobs, an on-request DP release, and the budget it spends."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dataspace.jobs.models import PrivacyBudget, Release
from tests.e2e.conftest import World, shot, sign_in


def test_partner_sees_contracts_jobs_released_aggregates_and_budget(world: World, page: Any) -> None:
    job_id = world.run_job()
    sign_in(page, world.base + "/partner/", world.analyst)
    page.locator("#contracts table").wait_for()
    assert "approved" in page.locator("#contracts table").inner_text()
    shot(page, "partner-contracts")

    # Opening the jobs tab spends nothing: a release happens only on request.
    page.get_by_role("tab", name="Jobs").click()
    release = page.locator(f'#jobs button[data-job="{job_id}"]')
    release.wait_for()
    with world.ctx.db.session() as s:
        assert s.scalars(select(Release)).all() == []
    release.click()
    result = page.locator("#jobs .result")
    result.wait_for()
    assert result.inner_text().startswith("ε")
    shot(page, "partner-jobs")
    with world.ctx.db.session() as s:
        spent = s.scalars(select(PrivacyBudget.micro_epsilon_spent)).all()
        assert [r.job_id for r in s.scalars(select(Release))] == [job_id]
    assert sum(spent) > 0

    page.get_by_role("tab", name="Privacy budget").click()
    page.locator("#budget table").wait_for()
    budget = page.locator("#budget table").inner_text()
    assert "epsilon_remaining" in budget
    shot(page, "partner-budget")
