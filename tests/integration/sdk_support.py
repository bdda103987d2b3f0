"""Driving the SDK's browser sign-in from tests: a free loopback port, a stand-in browser that signs a user in
on the real authorization page, and a registered CLI client with the test's port added."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from html import unescape

import httpx
from sqlalchemy import select

from dataspace.auth.models import OAuthClient
from dataspace.context import Context
from tests.factories.identities import TEST_PASSWORD


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def login_as(username: str) -> Callable[[str], None]:
    """An ``open_browser`` for ``AuthorizationCode``: posts the sign-in form as ``username`` and follows the
    redirect to the SDK's loopback listener."""

    def open_browser(url: str) -> None:
        with httpx.Client() as browser:
            page = browser.get(url)
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
            fields = {k: unescape(v) for k, v in fields.items()}
            answer = browser.post(
                url.split("?", maxsplit=1)[0],
                data={**fields, "username": username, "password": TEST_PASSWORD, "action": "approve"},
            )
            assert answer.status_code == 302, answer.text
            browser.get(answer.headers["location"])  # the redirect to our loopback listener

    return open_browser


def cli_client_on(ctx: Context, client_id: str, port: int) -> None:
    """The registered client, with this test's own loopback port added (8765 may be taken on a busy host)."""
    with ctx.db.transaction() as s:
        client = s.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
        assert client is not None
        client.redirect_uris = [*client.redirect_uris, f"http://127.0.0.1:{port}/callback"]
