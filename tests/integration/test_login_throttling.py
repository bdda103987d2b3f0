"""Failed sign-ins are throttled per (user name, client address) with exponential backoff, never by locking
the account: a guesser at one address waits longer and longer (429 with Retry-After), while the owner at
another address signs in at once with the right password (OWASP authentication guidance)."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from dataspace.app import create_app
from dataspace.auth import login
from dataspace.auth.models import LoginAttempt
from dataspace.context import Context
from dataspace.db import utcnow
from tests.factories.identities import TEST_PASSWORD, make_client, make_user

REDIRECT = "http://127.0.0.1:9/callback"
ATTACKER, OWNER = ("203.0.113.7", 40000), ("198.51.100.9", 40000)


def _attempt(ctx: Context, address: tuple[str, int], username: str, password: str) -> Response:
    """What a browser at ``address`` does: open the sign-in page, submit the form."""
    with TestClient(create_app(ctx), client=address, follow_redirects=False) as browser:
        query = {
            "response_type": "code",
            "client_id": "console",
            "redirect_uri": REDIRECT,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
        page = browser.get("/oauth/authorize", params=query)
        assert page.status_code == 200, page.text
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
        fields.update(username=username, password=password, action="approve")
        return browser.post("/oauth/authorize", data=fields)


def test_a_guesser_is_throttled_but_the_owner_elsewhere_signs_in(ctx: Context) -> None:
    make_client(ctx, "steward", public=True, client_id="console", redirect_uris=[REDIRECT])
    user = make_user(ctx, "steward")
    for _ in range(login.FREE_FAILURES):
        assert _attempt(ctx, ATTACKER, user.username, "wrong password!").status_code == 401
    throttled = _attempt(ctx, ATTACKER, user.username, TEST_PASSWORD)  # not even checked
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= login.BASE_DELAY.total_seconds()
    # The owner, from their own address, with the right password: no lockout.
    owner = _attempt(ctx, OWNER, user.username, TEST_PASSWORD)
    assert owner.status_code == 302, owner.text
    assert owner.headers["location"].startswith(REDIRECT + "?code=")


def test_backoff_doubles_and_a_success_clears_it(ctx: Context) -> None:
    user = make_user(ctx, "steward")
    t = utcnow()
    with ctx.db.transaction() as s:
        for i in range(login.FREE_FAILURES):
            r = login.sign_in(
                session=s, username=user.username, password="nope", address="a", now=t + timedelta(seconds=i)
            )
            assert r.outcome is login.Outcome.INVALID
        t += timedelta(seconds=login.FREE_FAILURES - 1)
        waits = []
        for _ in range(3):
            limited = login.sign_in(session=s, username=user.username, password=TEST_PASSWORD, address="a", now=t)
            assert limited.outcome is login.Outcome.LIMITED
            assert limited.retry_after is not None
            waits.append(limited.retry_after)
            t += timedelta(seconds=limited.retry_after)
            again = login.sign_in(session=s, username=user.username, password="nope", address="a", now=t)
            assert again.outcome is login.Outcome.INVALID  # checked again once the wait is over
        assert waits == [30, 60, 120]
        # Another address (same name) and the same address (another name) are not slowed down.
        other = login.sign_in(session=s, username=user.username, password=TEST_PASSWORD, address="b", now=t)
        assert other.outcome is login.Outcome.OK
        stranger = login.sign_in(session=s, username="someone-else", password="x", address="a", now=t)
        assert stranger.outcome is login.Outcome.INVALID
        t += timedelta(seconds=240)
        ok = login.sign_in(session=s, username=user.username, password=TEST_PASSWORD, address="a", now=t)
        assert ok.outcome is login.Outcome.OK
        fresh = login.sign_in(session=s, username=user.username, password="nope", address="a", now=t)
        assert fresh.outcome is login.Outcome.INVALID  # the success cleared the pair's failures


def test_one_address_spraying_many_names_is_throttled(ctx: Context) -> None:
    t = utcnow()
    with ctx.db.transaction() as s:
        for i in range(login.MAX_PER_ADDRESS):
            r = login.sign_in(session=s, username=f"name-{i}", password="x", address="sprayer", now=t)
            assert r.outcome is login.Outcome.INVALID
        limited = login.sign_in(session=s, username="name-x", password="x", address="sprayer", now=t)
        assert limited.outcome is login.Outcome.LIMITED
        assert limited.retry_after is not None
        assert 0 < limited.retry_after <= login.WINDOW.total_seconds()


def test_failures_past_the_window_are_forgotten_and_recent_ones_still_count(ctx: Context) -> None:
    user = make_user(ctx, "steward")
    t = utcnow()
    with ctx.db.transaction() as s:
        for i in range(login.FREE_FAILURES):  # long ago: a full backoff's worth
            login.sign_in(
                session=s,
                username="ghost",
                password="x",
                address="old",
                now=t - login.WINDOW * 2 + timedelta(seconds=i),
            )
        for i in range(login.FREE_FAILURES):  # now
            login.sign_in(session=s, username=user.username, password="nope", address="a", now=t + timedelta(seconds=i))
    with ctx.db.transaction() as s:
        assert login.prune(s, now=t + timedelta(seconds=login.FREE_FAILURES)) == 2 * login.FREE_FAILURES
    with ctx.db.session() as s:
        kept = s.scalars(select(LoginAttempt.at)).all()
    assert len(kept) == 2 * login.FREE_FAILURES  # the recent ones: one per (name, address) and one per address
    assert all(at >= t for at in kept)
    with ctx.db.transaction() as s:  # what is kept still throttles; what went never would have
        late = t + timedelta(seconds=login.FREE_FAILURES)
        r = login.sign_in(session=s, username=user.username, password=TEST_PASSWORD, address="a", now=late)
        assert r.outcome is login.Outcome.LIMITED
        r = login.sign_in(session=s, username="ghost", password="x", address="old", now=late)
        assert r.outcome is login.Outcome.INVALID  # checked, not limited
