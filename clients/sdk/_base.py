"""The transport every role client shares: bearer auth with refresh, step-up sign-in (RFC 9470), retries with
backoff, problem errors, cursor pagination."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Self

import httpx

from clients.sdk._auth import Credentials, Token
from clients.sdk._exceptions import TransportError, error_from_response

RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def step_up_max_age(response: httpx.Response) -> int | Literal[False] | None:
    """For an RFC 9470 ``insufficient_user_authentication`` challenge, its ``max_age`` (None if absent);
    False for any other answer."""
    challenge = response.headers.get("www-authenticate", "")
    if 'error="insufficient_user_authentication"' not in challenge:
        return False
    found = re.search(r"max_age=\"?([0-9]+)", challenge)
    return int(found.group(1)) if found else None


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class BaseClient:
    """One authenticated connection to a Dataspace server.

    ``max_retries`` retries 429 and 503 answers (honouring Retry-After, capped at ``max_backoff``) and, for
    idempotent methods, connection errors; other errors raise at once as typed ``APIError`` subclasses.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None,
        *,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "dataspace-sdk/0.1", "Accept": "application/json"},
        )
        self._token: Token | None = None
        self._endpoints: dict[str, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ------------------------------------------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, Any]:
        """The server's RFC 8414 metadata (fetched once)."""
        if self._endpoints is None:
            self._endpoints = self._send("GET", "/.well-known/oauth-authorization-server", authenticated=False).json()
        return self._endpoints

    def _access_token(self, *, force_refresh: bool = False) -> str:
        assert self.credentials is not None
        if self._token is None:
            self._token = self.credentials.obtain(self._http, self.endpoints)
        elif force_refresh or not self._token.fresh():
            self._token = self.credentials.refresh(self._http, self.endpoints, self._token)
        return self._token.access_token

    @property
    def token(self) -> Token | None:
        return self._token

    def sign_in(self) -> None:
        """Obtain a token now (otherwise the first request does)."""
        self._access_token()

    def revoke(self) -> None:
        """Revoke the refresh token (or access token) at the server and forget it."""
        if self._token is None:
            return
        value = self._token.refresh_token or self._token.access_token
        client_id = getattr(self.credentials, "client_id", None)
        secret = getattr(self.credentials, "client_secret", None)
        data = {"token": value}
        if client_id and not secret:
            data["client_id"] = client_id
        self._http.post(
            self.endpoints["revocation_endpoint"],
            data=data,
            auth=(client_id, secret) if client_id and secret else httpx.USE_CLIENT_DEFAULT,
        )
        self._token = None

    # -- requests --------------------------------------------------------------------------------------------
    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = retry_after_seconds(response) if response is not None else None
        if hinted is not None:
            return min(hinted, self.max_backoff)
        # Exponential backoff with full jitter: spreads out a crowd of clients retrying together.
        return float(random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt)))  # noqa: S311

    def _send(self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        refreshed = False
        attempt = 0
        while True:
            if authenticated and self.credentials is not None:
                headers["Authorization"] = f"Bearer {self._access_token()}"
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if method.upper() in IDEMPOTENT and attempt < self.max_retries:
                    self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                raise TransportError(f"{method} {path}: {exc}") from exc
            step_up = getattr(self.credentials, "step_up", None)
            if response.status_code == 401 and authenticated and step_up is not None and not refreshed:
                max_age = step_up_max_age(response)
                if max_age is not False:  # the action needs a more recent sign-in: sign in again, once
                    refreshed = True
                    self._token = step_up(self._http, self.endpoints, max_age)
                    continue
            if response.status_code == 401 and authenticated and self.credentials is not None and not refreshed:
                refreshed = True  # the token may have been revoked or expired early: refresh once
                self._access_token(force_refresh=True)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                self._sleep(self._delay(attempt, response))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise error_from_response(response)
            return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its decoded JSON (None for an empty body)."""
        response = self._send(method, path, **kwargs)
        if not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def paginate(
        self, path: str, *, cursor_param: str = "cursor", limit: int | None = None, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated list (``{"items": [...], "next_cursor": ...}``), page by page."""
        query = {k: v for k, v in params.items() if v is not None}
        if limit is not None:
            query["limit"] = limit
        while True:
            page = self.request("GET", path, params=query)
            yield from page.get("items", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query[cursor_param] = cursor

    def download(self, path: str, out: Any, **params: Any) -> int:
        """Stream a response body into the binary file object ``out``; returns the bytes written."""
        headers = {"Authorization": f"Bearer {self._access_token()}"} if self.credentials else {}
        written = 0
        with self._http.stream("GET", path, params=params, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            for chunk in response.iter_bytes():
                out.write(chunk)
                written += len(chunk)
        return written
