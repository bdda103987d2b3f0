"""RFC 9470 step-up in the portal: a customer whose sign-in is older than ``reauth_seconds`` redeems a reward or
erases the account; the server answers 401 ``insufficient_user_authentication``, the portal sends the person to
the sign-in page again (prompt=login, max_age), and after the password retries the action once."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from dataspace.auth.models import AuthorizationCode
from dataspace.db import utcnow
from dataspace.points import queries as points_queries
from tests.e2e.conftest import World, shot, sign_in
from tests.factories.identities import TEST_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _first_sign_in_an_hour_ago(world: World, page: Any) -> None:
    """The code is created when the person signs in; back-date the first one before the page exchanges it
    (the redirect itself cannot be intercepted, the token request the page makes can)."""
    seen: list[str] = []

    def backdate(route: Any) -> None:
        if not seen:
            with world.ctx.db.transaction() as s:
                row = s.scalars(select(AuthorizationCode).order_by(AuthorizationCode.id.desc())).first()
                assert row is not None
                s.execute(
                    update(AuthorizationCode)
                    .where(AuthorizationCode.id == row.id)
                    .values(created_at=row.created_at - timedelta(hours=1))
                )
        seen.append(route.request.url)
        route.continue_()

    page.route(re.compile(r"/oauth/token$"), backdate)


def _sign_in_again(page: Any, world: World) -> None:
    page.wait_for_url("**/oauth/authorize?**")
    assert "prompt=login" in page.url
    assert f"max_age={world.ctx.settings.reauth_seconds}" in page.url
    page.get_by_text("this action needs a recent sign-in").wait_for()
    page.get_by_label("User name").fill(world.customer)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Sign in and allow").click()


def test_redemption_after_an_old_sign_in_asks_for_the_password_and_charges_once(world: World, page: Any) -> None:
    world.run_job()
    _first_sign_in_an_hour_ago(world, page)
    sign_in(page, world.base + "/portal/", world.customer)
    page.get_by_role("tab", name="Points & rewards").click()
    page.locator("[data-reward=coffee]").wait_for()
    before = int(page.locator("#balance").inner_text().replace(",", ""))
    page.get_by_role("button", name="Redeem Coffee voucher").click()
    page.get_by_role("dialog").get_by_role("button", name="Redeem for 2 points").click()  # confirmed before sign-in
    _sign_in_again(page, world)
    page.get_by_text("Redeemed Coffee voucher").wait_for()
    page.wait_for_function(f"() => document.querySelector('#balance').textContent.replace(',', '') === '{before - 2}'")
    with world.ctx.db.session() as s:
        assert points_queries.get_summary(s, subject_id=world.subject_id, now=utcnow()).balance == before - 2
    assert page.locator("#redemptions").get_by_text("Coffee voucher").count() == 1
    assert page.locator("#voucher-code").inner_text()  # the voucher of the one redemption, after the sign-in
    shot(page, "portal-step-up-redeemed")


def test_erasure_after_an_old_sign_in_asks_for_the_password_then_erases(world: World, page: Any) -> None:
    _first_sign_in_an_hour_ago(world, page)
    sign_in(page, world.base + "/portal/", world.customer)
    page.get_by_role("tab", name="My account").click()
    page.get_by_label("Type ERASE to confirm").fill("ERASE")
    page.get_by_role("button", name="Erase my account").click()
    _sign_in_again(page, world)
    page.get_by_text("Your account was erased.").wait_for()
    shot(page, "portal-step-up-erased")
