"""Getting and keeping an access token: client credentials, or authorization code + PKCE with a local
redirect (RFC 8252 loopback), with refresh."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

from clients.sdk._exceptions import AuthenticationFailed

# Refresh a little before the server would reject the token, so a request never races the expiry.
EXPIRY_MARGIN = 30.0


@dataclass
class Token:
    access_token: str
    expires_at: float  # time.monotonic() deadline
    refresh_token: str | None = None
    scope: str = ""

    def fresh(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) < self.expires_at - EXPIRY_MARGIN


def _token_from(body: dict[str, Any]) -> Token:
    return Token(
        access_token=str(body["access_token"]),
        expires_at=time.monotonic() + float(body.get("expires_in") or 300),
        refresh_token=body.get("refresh_token"),
        scope=str(body.get("scope") or ""),
    )


def token_request(
    http: httpx.Client, token_url: str, data: dict[str, str], auth: tuple[str, str] | None = None
) -> Token:
    """POST to the token endpoint; an OAuth error answer becomes ``AuthenticationFailed``."""
    response = http.post(
        token_url,
        data=data,
        auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
        headers={"Accept": "application/json"},
    )
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or "access_token" not in body:
        raise AuthenticationFailed(
            str(body.get("error") or f"http_{response.status_code}"), str(body.get("error_description") or "")
        )
    return _token_from(body)


class Credentials(Protocol):
    """Something that can obtain a token (first time) and refresh it."""

    def obtain(self, http: httpx.Client, endpoints: dict[str, Any]) -> Token: ...

    def refresh(self, http: httpx.Client, endpoints: dict[str, Any], token: Token) -> Token: ...


@dataclass
class ClientCredentials:
    """A confidential client acting as itself (partner, steward or compliance automation)."""

    client_id: str
    client_secret: str
    scope: str | None = None

    def obtain(self, http: httpx.Client, endpoints: dict[str, Any]) -> Token:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        return token_request(http, endpoints["token_endpoint"], data, auth=(self.client_id, self.client_secret))

    def refresh(self, http: httpx.Client, endpoints: dict[str, Any], token: Token) -> Token:
        return self.obtain(http, endpoints)  # client credentials have no refresh token: ask again


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) as RFC 7636 defines them."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _CallbackHandler(BaseHTTPRequestHandler):
    result: dict[str, str]

    def do_GET(self) -> None:  # the one request the browser makes back to us
        query = parse_qs(urlparse(self.path).query)
        type(self).result.update({k: v[0] for k, v in query.items() if v})
        ok = "code" in query
        body = "Signed in. You can close this window." if ok else "Sign-in failed. You can close this window."
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:  # keep the terminal quiet
        return


@dataclass
class AuthorizationCode:
    """A person signing in through the browser: authorization code + PKCE with a loopback redirect.

    ``open_browser`` receives the authorization URL (default: the system browser); tests pass a function
    that drives a real browser or posts the login form. The redirect URI
    ``http://127.0.0.1:<port>/callback`` must be registered for the (public) client.
    """

    client_id: str
    port: int = 8765
    scope: str | None = None
    client_secret: str | None = None
    open_browser: Callable[[str], object] = webbrowser.open
    timeout: float = 300.0
    # OIDC / RFC 9470: ask for a new sign-in (``prompt="login"``) at most ``max_age`` seconds old.
    prompt: str | None = None
    max_age: int | None = None

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def obtain(self, http: httpx.Client, endpoints: dict[str, Any]) -> Token:
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        handler: type[_CallbackHandler] = type("Handler", (_CallbackHandler,), {"result": {}})
        server = HTTPServer(("127.0.0.1", self.port), handler)
        server.timeout = 0.5
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if self.scope:
            params["scope"] = self.scope
        if self.prompt:
            params["prompt"] = self.prompt
        if self.max_age is not None:
            params["max_age"] = str(self.max_age)
        url = f"{endpoints['authorization_endpoint']}?{urlencode(params)}"
        try:
            opener = threading.Thread(target=self.open_browser, args=(url,), daemon=True)
            opener.start()
            deadline = time.monotonic() + self.timeout
            while not handler.result and time.monotonic() < deadline:
                server.handle_request()
        finally:
            server.server_close()
        result: dict[str, str] = handler.result
        if not result:
            raise AuthenticationFailed("timeout", "no answer from the browser sign-in")
        if "error" in result:
            raise AuthenticationFailed(result["error"], result.get("error_description", ""))
        if not secrets.compare_digest(result.get("state", ""), state):
            raise AuthenticationFailed("invalid_state", "the sign-in answer does not belong to this request")
        data = {
            "grant_type": "authorization_code",
            "code": result["code"],
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
            "client_id": self.client_id,
        }
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        return token_request(http, endpoints["token_endpoint"], data, auth=auth)

    def step_up(self, http: httpx.Client, endpoints: dict[str, Any], max_age: int | None) -> Token:
        """Sign in again (the server answered ``insufficient_user_authentication``): an irreversible action
        needs a sign-in at most ``max_age`` seconds old, and refreshing a token keeps the old sign-in time."""
        return replace(self, prompt="login", max_age=max_age).obtain(http, endpoints)

    def refresh(self, http: httpx.Client, endpoints: dict[str, Any], token: Token) -> Token:
        if not token.refresh_token:
            return self.obtain(http, endpoints)
        data = {"grant_type": "refresh_token", "refresh_token": token.refresh_token, "client_id": self.client_id}
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        try:
            return token_request(http, endpoints["token_endpoint"], data, auth=auth)
        except AuthenticationFailed:
            return self.obtain(http, endpoints)  # refresh token expired or revoked: sign in again


@dataclass
class StaticToken:
    """An access token obtained elsewhere (no refresh)."""

    access_token: str

    def obtain(self, http: httpx.Client, endpoints: dict[str, Any]) -> Token:
        return Token(self.access_token, expires_at=float("inf"))

    def refresh(self, http: httpx.Client, endpoints: dict[str, Any], token: Token) -> Token:
        raise AuthenticationFailed("invalid_token", "the access token was rejected and cannot be refreshed")
