"""The landing page at ``/`` in a real browser: one link per role to its app, in English and Chinese, at
desktop and phone widths without horizontal overflow; the steward link opens the steward console."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dataspace.auth.web_clients import ensure_web_clients
from dataspace.context import Context
from tests.e2e.conftest import shot
from tests.integration.oauth_server import running_server

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def base(ctx: Context) -> Iterator[str]:
    with running_server(ctx) as (url, served):
        ensure_web_clients(served)
        yield url


@pytest.mark.parametrize("width", [1100, 390])
def test_landing_page_leads_each_role_to_its_app(base: str, page: Any, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 800})
    page.goto(base + "/")
    for name in ("My data", "Partner view", "Steward console", "Compliance console"):
        page.get_by_role("link", name=name).wait_for()
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, f"landing-en-{width}")
    page.locator("#lang").select_option("zh-CN")
    for name in ("我的数据", "合作伙伴视图", "数据管理员控制台", "合规控制台"):
        page.get_by_role("link", name=name).wait_for()
    assert page.evaluate("() => document.documentElement.lang") == "zh-CN"
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, f"landing-zh-CN-{width}")
    page.get_by_role("link", name="数据管理员控制台").click()
    page.wait_for_url("**/steward/")
    page.get_by_role("button", name="登录").wait_for()
