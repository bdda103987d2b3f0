"""The landing page at ``/`` leads each role to its app, in both languages, under the pages' strict CSP; the
steward console is served the same way; unknown paths still answer problem+json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dataspace.app import create_app
from dataspace.context import Context
from dataspace.http.routes.pages import CSP, WEB_ROOT

I18N = WEB_ROOT / "static" / "i18n"


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def test_landing_page_links_every_app(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-frame-options"] == "DENY"
    html = response.text
    links = set(re.findall(r'href="(/[a-z]+/)"', html))
    assert {"/portal/", "/partner/", "/steward/", "/console/"} <= links
    assert "<script>" not in html  # nothing the CSP would block
    assert "style=" not in html
    for asset in ("/static/landing.js", "/static/landing.css"):
        assert client.get(asset).status_code == 200
    for app in links:  # every link leads to a page that exists
        assert client.get(app).status_code == 200, app


def test_landing_and_steward_texts_exist_in_both_languages() -> None:
    en = json.loads((I18N / "en.json").read_text(encoding="utf-8"))
    zh = json.loads((I18N / "zh-CN.json").read_text(encoding="utf-8"))
    pages = [WEB_ROOT / "static" / "landing.html", WEB_ROOT / "steward" / "index.html"]
    used = {k for p in pages for k in re.findall(r'data-i18n(?:-aria)?="([^"]+)"', Path(p).read_text())}
    used |= set(re.findall(r't\("(steward\.[A-Za-z.]+)"', (WEB_ROOT / "steward" / "steward.js").read_text()))
    assert used, "no texts found"
    assert not used - set(en), sorted(used - set(en))
    assert not used - set(zh), sorted(used - set(zh))
    mine = {k for k in en if k.startswith(("steward.", "landing."))}
    assert mine == {k for k in zh if k.startswith(("steward.", "landing."))}
    assert all(zh[k] != en[k] or k.endswith("sizeText") for k in mine), [k for k in mine if zh[k] == en[k]]


def test_steward_console_is_a_page_and_unknown_paths_stay_problems(client: TestClient) -> None:
    page = client.get("/steward/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert 'src="/steward/steward.js"' in page.text
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
