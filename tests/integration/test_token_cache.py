"""The bearer-token memos (``dataspace.auth.tokens``) never let a revoked token through for longer than
documented: at once for a revocation made by this process, within ``token_active_cache_seconds`` for one made
by another process (simulated here by writing ``revoked_at`` directly, which this process cannot see)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from dataspace.app import create_app
from dataspace.auth import tokens
from dataspace.auth.models import IssuedToken
from dataspace.context import Context
from dataspace.db import utcnow
from tests.factories.identities import bearer, issue_token

GUARDED = "/v1/me/consents"


def _client(ctx: Context, cache_seconds: float) -> TestClient:
    settings = ctx.settings.model_copy(update={"token_active_cache_seconds": cache_seconds})
    return TestClient(create_app(Context(settings=settings, db=ctx.db, keys=ctx.keys)))


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with _client(ctx, 60.0) as c:  # a long memo: only the in-process invalidation can end it in time
        yield c


def _set_revoked(ctx: Context, token: str, revoked: bool) -> None:
    """Write the token's row the way another server process would (no hook of this process runs)."""
    _set_revoked_at(ctx, token, utcnow() if revoked else None)


def _set_revoked_at(ctx: Context, token: str, at: object) -> None:
    with ctx.db.transaction() as session:
        session.execute(
            update(IssuedToken).where(IssuedToken.jti == tokens.unverified_claims(token)["jti"]).values(revoked_at=at)
        )


def _family(ctx: Context, token: str) -> str:
    with ctx.db.session() as session:
        family = session.scalar(
            select(IssuedToken.family).where(IssuedToken.jti == tokens.unverified_claims(token)["jti"])
        )
    assert family is not None
    return family


def test_a_revocation_through_this_process_is_refused_at_once(ctx: Context, client: TestClient) -> None:
    token = issue_token(ctx, "customer")
    assert client.get(GUARDED, headers=bearer(token)).status_code == 200
    assert client.get(GUARDED, headers=bearer(token)).status_code == 200  # now remembered as not revoked
    with ctx.db.transaction() as session:
        tokens.revoke_family(session, _family(ctx, token))
    assert client.get(GUARDED, headers=bearer(token)).status_code == 401


def test_a_revocation_by_another_process_is_refused_within_the_bound(ctx: Context) -> None:
    token = issue_token(ctx, "customer")
    with _client(ctx, 0.5) as client:
        assert client.get(GUARDED, headers=bearer(token)).status_code == 200
        _set_revoked(ctx, token, revoked=True)
        time.sleep(0.6)
        assert client.get(GUARDED, headers=bearer(token)).status_code == 401


def test_without_the_memo_every_request_asks_the_database(ctx: Context) -> None:
    token = issue_token(ctx, "customer")
    with _client(ctx, 0) as client:
        assert client.get(GUARDED, headers=bearer(token)).status_code == 200
        _set_revoked(ctx, token, revoked=True)
        assert client.get(GUARDED, headers=bearer(token)).status_code == 401


def test_refusals_are_never_remembered(ctx: Context, client: TestClient) -> None:
    token = issue_token(ctx, "customer")
    _set_revoked(ctx, token, revoked=True)
    assert client.get(GUARDED, headers=bearer(token)).status_code == 401
    _set_revoked(ctx, token, revoked=False)
    assert client.get(GUARDED, headers=bearer(token)).status_code == 200


def test_a_check_that_read_the_row_before_the_revocation_committed_is_not_remembered(ctx: Context) -> None:
    token = issue_token(ctx, "customer")
    jti = tokens.unverified_claims(token)["jti"]
    key = (ctx.db.url, jti)
    memo = tokens._active
    with ctx.db.transaction() as session:
        tokens.revoke_family(session, _family(ctx, token))
        # A concurrent request read "not revoked" (the revocation is not committed yet) and stores it now.
        memo.remember(key, 60.0, memo.generation)
        assert memo.fresh(key)
    assert not memo.fresh(key)  # the commit dropped it
    before = memo.generation
    memo.clear()
    memo.remember(key, 60.0, before)  # read under the generation before a revocation: not stored
    assert not memo.fresh(key)
    assert not tokens.is_active_cached(ctx.settings, ctx.db, jti)


def test_erasing_an_account_refuses_its_remembered_token_at_once(ctx: Context, client: TestClient) -> None:
    token = issue_token(ctx, "customer")
    assert client.get(GUARDED, headers=bearer(token)).status_code == 200
    r = client.delete("/v1/me", params={"confirm": "erase my data"}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert client.get(GUARDED, headers=bearer(token)).status_code == 401


@pytest.fixture
def watched(ctx: Context) -> Iterator[Context]:
    """A context with a short bound, and a memo left clean for the next test (sweeps vouch per database)."""
    settings = ctx.settings.model_copy(update={"token_active_cache_seconds": 1.0})
    yield Context(settings=settings, db=ctx.db, keys=ctx.keys)
    tokens._active.clear()


def test_the_revocation_watch_keeps_answers_past_their_age_and_drops_what_another_process_revoked(
    watched: Context,
) -> None:
    kept, revoked = issue_token(watched, "customer"), issue_token(watched, "customer")
    kept_jti, revoked_jti = (tokens.unverified_claims(t)["jti"] for t in (kept, revoked))
    assert tokens.is_active_cached(watched.settings, watched.db, kept_jti)
    assert tokens.is_active_cached(watched.settings, watched.db, revoked_jti)
    watch = tokens.RevocationWatch(watched.settings, watched.db)
    assert watch.sweep() == 0
    time.sleep(0.6)
    assert watch.sweep() == 0
    time.sleep(0.6)  # 1.2 s after the database answered: only the second sweep vouches for the answers now
    assert tokens.is_active_remembered(watched.settings, watched.db, kept_jti)
    assert tokens.is_active_remembered(watched.settings, watched.db, revoked_jti)

    _set_revoked(watched, revoked, revoked=True)  # by another process: no hook of this one runs
    assert watch.sweep() == 1
    assert not tokens.is_active_remembered(watched.settings, watched.db, revoked_jti)
    assert not tokens.is_active_cached(watched.settings, watched.db, revoked_jti)
    assert tokens.is_active_remembered(watched.settings, watched.db, kept_jti)

    time.sleep(1.1)  # no sweep for longer than the bound: nothing vouches any more, the database is asked
    assert not tokens.is_active_remembered(watched.settings, watched.db, kept_jti)
    assert tokens.is_active_cached(watched.settings, watched.db, kept_jti)


def test_the_revocation_watch_sees_revocations_stamped_before_its_previous_sweep(watched: Context) -> None:
    token = issue_token(watched, "customer")
    jti = tokens.unverified_claims(token)["jti"]
    assert tokens.is_active_cached(watched.settings, watched.db, jti)
    watch = tokens.RevocationWatch(watched.settings, watched.db)
    watch.sweep()
    # Another replica's clock runs 10 s behind (or its revoking transaction took 10 s to commit).
    _set_revoked_at(watched, token, utcnow() - timedelta(seconds=10))
    assert watch.sweep() == 1
    assert not tokens.is_active_remembered(watched.settings, watched.db, jti)
