"""The SDK's transport rules, against an in-process HTTP transport: retries with backoff on 429/503
(honouring Retry-After), no blind retry of non-idempotent requests on connection errors, typed errors
from problem+json, cursor pagination, and a token refresh after a 401."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.sdk import (
    ClientCredentials,
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    RateLimited,
    ServerError,
    StaticToken,
    TransportError,
    Unauthorized,
    Unavailable,
)
from clients.sdk._auth import pkce_pair
from clients.sdk._base import BaseClient, retry_after_seconds
from clients.sdk._exceptions import error_from_response

PROBLEM = {"content-type": "application/problem+json"}
META = {"token_endpoint": "http://t/oauth/token", "revocation_endpoint": "http://t/oauth/revoke"}


def client(handler: Any, sleeps: list[float], credentials: Any = None, **kw: Any) -> BaseClient:
    c = BaseClient(
        "http://t", credentials or StaticToken("tok"), transport=httpx.MockTransport(handler), sleep=sleeps.append, **kw
    )
    c._endpoints = META
    return c


def test_503_then_success_honours_retry_after() -> None:
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "2"}),
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(200, json={"ok": True}),
        ]
    )
    sleeps: list[float] = []
    assert client(lambda r: next(answers), sleeps).get("/x") == {"ok": True}
    assert sleeps == [2.0, 1.0]


def test_gives_up_after_max_retries_with_a_typed_error() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            429, json={"title": "Too many", "detail": "slow down", "code": "rate_limited"}, headers=PROBLEM
        )

    sleeps: list[float] = []
    with pytest.raises(RateLimited) as caught:
        client(handler, sleeps, max_retries=3, backoff=0.1, max_backoff=1.0).get("/x")
    assert len(calls) == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= 1.0 for s in sleeps)
    assert caught.value.code == "rate_limited"
    assert caught.value.detail == "slow down"


def test_backoff_is_capped() -> None:
    sleeps: list[float] = []
    with pytest.raises(Unavailable):
        client(lambda r: httpx.Response(503, headers={"Retry-After": "3600"}), sleeps, max_backoff=5.0).get("/x")
    assert sleeps == [5.0, 5.0, 5.0]


def test_connection_errors_are_retried_only_for_idempotent_methods() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ConnectError("refused", request=request)

    sleeps: list[float] = []
    c = client(handler, sleeps, max_retries=2)
    with pytest.raises(TransportError):
        c.get("/x")
    assert calls == ["GET"] * 3
    calls.clear()
    with pytest.raises(TransportError):
        c.request("POST", "/x", json={})
    assert calls == ["POST"]


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (422, "invalid_input", InvalidInput),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "not_found", NotFound),
        (409, "conflict", Conflict),
        (409, "insufficient_funds", InsufficientFunds),
        (500, "internal_error", ServerError),
    ],
)
def test_problem_json_becomes_a_typed_error(status: int, code: str, cls: type) -> None:
    body = {
        "type": f"https://dataspace.example/problems/{code}",
        "title": "T",
        "status": status,
        "detail": "D",
        "code": code,
        "request_id": "r1",
        "errors": [{"loc": ["body", "x"], "msg": "bad"}],
    }
    err = error_from_response(httpx.Response(status, json=body, headers=PROBLEM))
    assert type(err) is cls
    assert (err.status, err.title, err.detail, err.code, err.request_id) == (status, "T", "D", code, "r1")
    assert err.errors == [{"loc": ["body", "x"], "msg": "bad"}]


def test_a_non_json_error_body_still_gives_a_typed_error() -> None:
    err = error_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(err, ServerError)
    assert err.status == 502


def test_pagination_follows_the_cursor() -> None:
    pages = {
        None: {"items": [1, 2], "next_cursor": "a"},
        "a": {"items": [3], "next_cursor": "b"},
        "b": {"items": [], "next_cursor": None},
    }
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    assert list(client(handler, []).paginate("/list", limit=2, log="audit")) == [1, 2, 3]
    assert seen[0] == {"limit": "2", "log": "audit"}
    assert seen[2]["cursor"] == "b"


def test_a_401_refreshes_the_token_once() -> None:
    issued: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            issued.append(f"tok{len(issued)}")
            assert request.headers["authorization"].startswith("Basic ")
            return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 900, "token_type": "Bearer"})
        if request.headers["authorization"] == "Bearer tok0":
            return httpx.Response(401, json={"title": "Unauthorized", "code": "unauthorized"}, headers=PROBLEM)
        return httpx.Response(200, json={"who": request.headers["authorization"]})

    c = client(handler, [], credentials=ClientCredentials("id", "secret"))
    assert c.get("/x") == {"who": "Bearer tok1"}
    assert issued == ["tok0", "tok1"]


def test_a_persistent_401_raises_after_one_refresh() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 900})
        return httpx.Response(401, json={"title": "Unauthorized", "code": "unauthorized"}, headers=PROBLEM)

    with pytest.raises(Unauthorized):
        client(handler, [], credentials=ClientCredentials("id", "secret")).get("/x")


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=30))
def test_retry_after_parsing_never_raises(value: str) -> None:
    got = retry_after_seconds(httpx.Response(503, headers={"Retry-After": value}))
    assert got is None or got >= 0


def test_pkce_pair_is_s256() -> None:
    import base64
    import hashlib

    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert json.dumps(challenge)
