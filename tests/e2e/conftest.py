"""End-to-end fixtures: a real server (uvicorn in a thread) on the test database, a small demo-like world
(catalog, customers with consents, an approved partner contract with an ONNX model, rewards, accounts),
and Debian's Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dataspace.auth.web_clients import ensure_web_clients
from dataspace.context import Context
from dataspace.jobs import service as jobs
from dataspace.points import rewards as points_rewards
from dataspace.points.schemas import RewardCreate
from dataspace.tlog.log import sequence
from tests.factories import jobs as js
from tests.factories.identities import TEST_PASSWORD, make_user
from tests.integration.oauth_server import running_server

CHROMIUM = os.environ.get("DATASPACE_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"

pytestmark = pytest.mark.e2e


@dataclass
class World:
    base: str
    ctx: Context
    customer: str  # user names; every password is TEST_PASSWORD
    auditor: str
    analyst: str
    subject_id: int
    model_id: int
    contract_id: int

    def run_job(self) -> int:
        """Submit and run one partner job to completion (the real runner and sandbox)."""
        with self.ctx.db.transaction() as s:
            job_id = jobs.submit(s, principal=js.partner_principal(self.ctx), model_id=self.model_id).id
        result = self.ctx.jobs.run_job(job_id)
        assert result.status == "succeeded", result
        sequence(
            self.ctx.settings, self.ctx.db, self.ctx.keys, "usage"
        )  # what the server's sequencer does in the background
        sequence(self.ctx.settings, self.ctx.db, self.ctx.keys, "audit")
        return job_id


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def world(ctx: Context) -> Iterator[World]:
    built = js.build_world(ctx, n=45)
    contract_id = js.approved_contract(ctx)
    model_id = js.upload_onnx(ctx, contract_id)
    subject_id = built.consenting[0]
    customer = make_user(ctx, "customer", username="e2e-customer", subject_id=subject_id).username
    auditor = make_user(ctx, "compliance", username="e2e-auditor").username
    analyst = make_user(ctx, "partner", username="e2e-analyst", partner_key=js.PARTNER).username
    with ctx.db.transaction() as s:
        points_rewards.create_reward(
            s,
            data=RewardCreate(
                key="coffee", name="Coffee voucher", cost=2, stock=100, i18n={"zh-CN": {"name": "咖啡券"}}
            ),
        )
        points_rewards.create_reward(
            s, data=RewardCreate(key="lounge", name="Airport lounge", cost=10_000_000, stock=5)
        )
    with running_server(ctx) as (base, served):
        ensure_web_clients(served.settings, served.db)
        yield World(
            base=base,
            ctx=served,
            customer=customer,
            auditor=auditor,
            analyst=analyst,
            subject_id=subject_id,
            model_id=model_id,
            contract_id=contract_id,
        )


@pytest.fixture
def page(browser: Any, backend: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.artifacts = ARTIFACTS / backend  # type: ignore[attr-defined]
    page.artifacts.mkdir(parents=True, exist_ok=True)  # type: ignore[attr-defined]
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(page.artifacts / f"{name}.png"), full_page=True)


def sign_in(page: Any, url: str, username: str, password: str = TEST_PASSWORD) -> None:
    """Open a page, press its Sign in button, and sign in on the authorization server's login page."""
    page.goto(url)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/oauth/authorize?**")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in and allow").click()
    page.wait_for_selector("#app:not([hidden])")
