"""The landing page at ``/`` in a real browser: one link per role to its app, in English and Chinese, at
desktop and phone widths without horizontal overflow or serious axe-core (WCAG 2.1 AA) violations; the steward
link opens the steward console, whose sign-in page then speaks Chinese too (``ui_locales``) and signs in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dataspace.auth.web_clients import ensure_web_clients
from dataspace.context import Context
from tests.e2e.a11y import serious_violations
from tests.e2e.conftest import shot
from tests.factories.identities import TEST_PASSWORD, make_user
from tests.integration.oauth_server import running_server

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def base(ctx: Context) -> Iterator[str]:
    with running_server(ctx) as (url, served):
        ensure_web_clients(served.settings, served.db)
        yield url


@pytest.mark.parametrize("width", [1100, 390])
def test_landing_page_leads_each_role_to_its_app(base: str, ctx: Context, page: Any, width: int) -> None:
    steward = make_user(ctx, "steward", username=f"e2e-landing-steward-{width}").username
    page.set_viewport_size({"width": width, "height": 800})
    page.goto(base + "/")
    for name in ("My data", "Partner view", "Steward console", "Compliance console"):
        page.get_by_role("link", name=name).wait_for()
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert serious_violations(page) == []
    shot(page, f"landing-en-{width}")
    page.locator("#lang").select_option("zh-CN")
    for name in ("我的数据", "合作伙伴视图", "数据管理员控制台", "合规控制台"):
        page.get_by_role("link", name=name).wait_for()
    assert page.evaluate("() => document.documentElement.lang") == "zh-CN"
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert serious_violations(page) == []
    shot(page, f"landing-zh-CN-{width}")
    page.get_by_role("link", name="数据管理员控制台").click()
    page.wait_for_url("**/steward/")
    page.get_by_role("button", name="登录").click()

    # The authorization server's sign-in page follows the app's language (OIDC ui_locales).
    page.wait_for_url("**/oauth/authorize?**")
    assert "ui_locales=zh-CN" in page.url
    page.get_by_role("heading", name="登录以继续").wait_for()
    assert page.evaluate("() => document.documentElement.lang") == "zh"
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert serious_violations(page) == []
    shot(page, f"signin-zh-{width}")
    # The switch link changes the language and keeps the request; both pages pass axe-core.
    page.get_by_role("link", name="Switch to English").click()
    page.get_by_role("heading", name="Sign in to continue").wait_for()
    assert serious_violations(page) == []
    shot(page, f"signin-en-{width}")
    page.get_by_role("link", name="切换到中文").click()
    page.get_by_role("heading", name="登录以继续").wait_for()
    page.get_by_label("用户名").fill(steward)
    page.get_by_label("密码").fill(TEST_PASSWORD)
    page.get_by_role("button", name="登录并允许").click()
    page.wait_for_selector("#app:not([hidden])")
    page.locator("header h1", has_text="数据管理员控制台").wait_for()
