"""The sign-in page speaks English or Chinese: chosen by the OIDC ``ui_locales`` parameter (what the web apps send)
or Accept-Language, kept across a failed attempt, switchable by a link, and signing in works in either."""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

from dataspace.context import Context
from tests.factories.identities import TEST_PASSWORD, make_client, make_user
from tests.integration.oauth_server import running_server

REDIRECT = "http://127.0.0.1:9/callback"
ZH_LABELS = ("用户名", "密码", "登录并允许", "拒绝", "登录以继续")
EN_LABELS = ("User name", "Password", "Sign in and allow", "Deny", "Sign in to continue")


@pytest.fixture
def server(ctx: Context) -> Iterator[tuple[str, Context]]:
    with running_server(ctx) as served:
        _base, own = served
        make_client(own, "customer", public=True, client_id="portal", redirect_uris=[REDIRECT])
        yield served


def _oauth() -> tuple[OAuth2Client, str]:
    oauth = OAuth2Client(
        client_id="portal",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    return oauth, generate_token(48)


def _authorize_url(base: str, **extra: str) -> tuple[OAuth2Client, str, str]:
    oauth, verifier = _oauth()
    url, _ = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=verifier, **extra)
    return oauth, url, verifier


def _hidden(page: str) -> dict[str, str]:
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return {name: html.unescape(value) for name, value in found}


def _lang(page: str) -> str:
    match = re.search(r'<html lang="([^"]+)">', page)
    assert match, page
    return match.group(1)


def _submit(base: str, page: httpx.Response, username: str, password: str) -> httpx.Response:
    fields = {**_hidden(page.text), "username": username, "password": password, "action": "approve"}
    return httpx.post(f"{base}/oauth/authorize", data=fields, cookies=page.cookies)


def test_chinese_sign_in_page_renders_chinese_and_signs_in(server: tuple[str, Context]) -> None:
    base, ctx = server
    user = make_user(ctx, "customer")
    oauth, url, verifier = _authorize_url(base, ui_locales="zh-CN", scope="catalog consents")
    page = httpx.get(url)
    assert page.status_code == 200
    assert _lang(page.text) == "zh"
    assert "<strong>我的数据</strong>" in page.text  # the built-in client's Chinese name
    assert "数据说明书、授权" in page.text  # the scopes asked for, in words
    for label in ZH_LABELS:
        assert label in page.text
    for label in EN_LABELS:
        assert label not in page.text
    assert _hidden(page.text)["ui_locales"] == "zh-CN"  # carried through the form

    # A wrong password keeps the page (and its error) in Chinese.
    wrong = _submit(base, page, user.username, "not the password")
    assert wrong.status_code == 401
    assert _lang(wrong.text) == "zh"
    assert "用户名或密码错误。" in wrong.text
    assert "Wrong user name or password." not in wrong.text

    answer = _submit(base, wrong, user.username, TEST_PASSWORD)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT)
    assert "code" in parse_qs(urlsplit(location).query)
    token = oauth.fetch_token(f"{base}/oauth/token", authorization_response=location, code_verifier=verifier)
    assert token["access_token"]


def test_accept_language_picks_the_language_and_ui_locales_wins(server: tuple[str, Context]) -> None:
    base, _ = server
    advertised = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
    assert advertised["ui_locales_supported"] == ["en", "zh-CN"]
    _, url, _ = _authorize_url(base)
    cases = [
        ({}, "en"),
        ({"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}, "zh"),
        ({"Accept-Language": "en-US,en;q=0.9,zh;q=0.5"}, "en"),
        ({"Accept-Language": "en;q=0.2, zh-TW;q=0.7"}, "zh"),
        ({"Accept-Language": "fr-FR,de"}, "en"),
    ]
    for headers, lang in cases:
        page = httpx.get(url, headers=headers)
        assert page.status_code == 200
        assert _lang(page.text) == lang, headers
    _, url_en, _ = _authorize_url(base, ui_locales="en")
    assert _lang(httpx.get(url_en, headers={"Accept-Language": "zh-CN"}).text) == "en"


def test_language_switch_link_keeps_the_request(server: tuple[str, Context]) -> None:
    base, ctx = server
    user = make_user(ctx, "customer")
    oauth, url, verifier = _authorize_url(base)
    english = httpx.get(url)
    match = re.search(r'<a href="([^"]+)" hreflang="zh"', english.text)
    assert match, english.text
    href = html.unescape(match.group(1))
    assert href.startswith("/oauth/authorize?")
    chinese = httpx.get(base + href)
    assert chinese.status_code == 200
    assert _lang(chinese.text) == "zh"
    assert re.search(r'<a href="[^"]+" hreflang="en"', chinese.text)
    # The switched page is the same request (same PKCE challenge, state, client): it still signs in.
    assert _hidden(chinese.text)["code_challenge"] == _hidden(english.text)["code_challenge"]
    answer = _submit(base, chinese, user.username, TEST_PASSWORD)
    assert answer.status_code == 302, answer.text
    token = oauth.fetch_token(
        f"{base}/oauth/token", authorization_response=answer.headers["location"], code_verifier=verifier
    )
    assert token["access_token"]


def test_hostile_ui_locales_is_escaped_and_falls_back_to_english(server: tuple[str, Context]) -> None:
    base, _ = server
    payload = '"><script>alert(1)</script>'
    _, url, _ = _authorize_url(base, ui_locales=payload)
    page = httpx.get(url)
    assert page.status_code == 200
    assert _lang(page.text) == "en"
    assert "<script>" not in page.text
    assert _hidden(page.text)["ui_locales"] == payload  # kept as inert text


def test_rejected_request_page_is_chinese_too(server: tuple[str, Context]) -> None:
    base, _ = server
    oauth = OAuth2Client(client_id="nobody", redirect_uri=REDIRECT, code_challenge_method="S256")
    url, _ = oauth.create_authorization_url(
        f"{base}/oauth/authorize", code_verifier=generate_token(48), ui_locales="zh"
    )
    page = httpx.get(url)
    assert page.status_code == 400
    assert "location" not in page.headers
    assert _lang(page.text) == "zh"
    assert "无法处理此登录请求" in page.text
