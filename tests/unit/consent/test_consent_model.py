"""The grant lifecycle and the single-check rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consent import (
    FieldRef,
    GrantState,
    Granularity,
    InvalidGrant,
    PartnerRef,
    Scope,
    expire,
    is_permitted,
    new_grant,
    renew,
    withdraw,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
INCOME = FieldRef("income", "assets", sensitive=False)
HEALTH = FieldRef("health", "identity", sensitive=True)
AGE = FieldRef("age", "identity", sensitive=False)
ACME = PartnerRef("acme", "insurer")
OTHER_INSURER = PartnerRef("safeco", "insurer")


def grant(scope: Scope, **kw):
    kw.setdefault("now", T0)
    return new_grant(id=kw.pop("id", 1), subject_id=kw.pop("subject_id", 7), scope=scope, **kw)


def check(grants, field, partner=ACME, purpose="underwriting", at=T0, granularity=Granularity.GENERALIZED):
    return is_permitted(
        grants, subject_id=7, field=field, partner=partner, purpose=purpose, at=at, granularity=granularity
    )


def test_nothing_is_granted_by_default():
    assert not check([], INCOME)


def test_field_grant_for_a_partner_covers_exactly_that():
    g = grant(Scope("underwriting", field="income", partner="acme"))
    assert check([g], INCOME)
    assert not check([g], AGE)
    assert not check([g], INCOME, partner=OTHER_INSURER)
    assert not check([g], INCOME, purpose="marketing")
    assert not is_permitted([g], subject_id=8, field=INCOME, partner=ACME, purpose="underwriting", at=T0)


def test_dimension_and_category_grants_cover_normal_fields():
    g = grant(Scope("underwriting", dimension="identity", partner_category="insurer"))
    assert check([g], AGE)
    assert check([g], AGE, partner=OTHER_INSURER)
    assert not check([g], AGE, partner=PartnerRef("volt", "charging"))
    assert not check([g], INCOME)


@pytest.mark.parametrize(
    "scope",
    [
        Scope("underwriting", dimension="identity", partner="acme"),
        Scope("underwriting", field="health", partner_category="insurer"),
        Scope("underwriting", dimension="identity", partner_category="insurer"),
    ],
)
def test_sensitive_fields_need_an_explicit_field_and_partner_grant(scope):
    assert not check([grant(scope)], HEALTH)


def test_sensitive_field_with_explicit_grant():
    g = grant(Scope("underwriting", field="health", partner="acme"))
    assert check([g], HEALTH)
    assert not check([g], HEALTH, partner=OTHER_INSURER)


def test_granularity_raw_covers_generalized_not_the_reverse():
    gen = grant(Scope("underwriting", field="income", partner="acme"))
    raw = grant(Scope("underwriting", field="income", partner="acme"), granularity="pseudonymized-raw")
    assert check([gen], INCOME, granularity=Granularity.GENERALIZED)
    assert not check([gen], INCOME, granularity=Granularity.PSEUDONYMIZED_RAW)
    assert check([raw], INCOME, granularity=Granularity.PSEUDONYMIZED_RAW)
    assert check([raw], INCOME, granularity=Granularity.GENERALIZED)
    with pytest.raises(InvalidGrant):
        grant(Scope("underwriting", field="income", partner="acme"), granularity="everything")


def test_window_boundaries_and_expiry():
    g = grant(Scope("underwriting", field="income", partner="acme"), valid_from=T0 + H, valid_until=T0 + 3 * H)
    assert not check([g], INCOME, at=T0)
    assert check([g], INCOME, at=T0 + H)
    assert check([g], INCOME, at=T0 + 3 * H - timedelta(microseconds=1))
    assert not check([g], INCOME, at=T0 + 3 * H)  # expires by itself at valid_until
    with pytest.raises(InvalidGrant):
        expire(g, T0 + 2 * H)
    expired = expire(g, T0 + 3 * H)
    assert expired.state is GrantState.EXPIRED
    assert check([expired], INCOME, at=T0 + 2 * H)  # history stays answerable


def test_withdrawal_is_immediate_and_final():
    g = grant(Scope("underwriting", field="income", partner="acme"))
    w = withdraw(g, T0 + H)
    assert w.state is GrantState.WITHDRAWN
    assert check([w], INCOME, at=T0 + H - timedelta(microseconds=1))
    assert not check([w], INCOME, at=T0 + H)
    assert not check([w], INCOME, at=T0 + 100 * H)
    with pytest.raises(InvalidGrant):
        withdraw(w, T0 + 2 * H)
    with pytest.raises(InvalidGrant):
        renew(w, T0 + 2 * H, None)


def test_renew_extends_a_running_grant_only():
    g = grant(Scope("underwriting", field="income", partner="acme"), valid_until=T0 + H)
    r = renew(g, T0 + H / 2, T0 + 5 * H)
    assert r.valid_until == T0 + 5 * H
    assert r.id == g.id
    assert check([r], INCOME, at=T0 + 4 * H)
    forever = renew(g, T0 + H / 2, None)
    assert forever.valid_until is None
    with pytest.raises(InvalidGrant):
        renew(g, T0 + 2 * H, T0 + 5 * H)  # lapsed: grant again instead
    with pytest.raises(InvalidGrant):
        renew(g, T0 + H / 2, T0)  # end in the past


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "message"),
    [
        (T0 - H, None, "past"),
        (None, T0 - H, "past"),
        (None, T0, "past"),
        (T0 + 2 * H, T0 + H, "after valid_from"),
        (datetime(2025, 1, 1, 13, 0), None, "timezone"),
    ],
)
def test_bad_windows_are_rejected(valid_from, valid_until, message):
    with pytest.raises(InvalidGrant, match=message):
        grant(Scope("underwriting", field="income", partner="acme"), valid_from=valid_from, valid_until=valid_until)


def test_small_clock_skew_counts_as_now():
    g = grant(Scope("underwriting", field="income", partner="acme"), valid_from=T0 - timedelta(seconds=30))
    assert g.valid_from == T0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"field": "income", "dimension": "assets", "partner": "acme"},
        {"partner": "acme"},
        {"field": "income"},
        {"field": "income", "partner": "acme", "partner_category": "insurer"},
        {"field": "Income; drop", "partner": "acme"},
    ],
)
def test_scope_needs_exactly_one_target_and_recipient(kwargs):
    with pytest.raises(InvalidGrant):
        Scope("underwriting", **kwargs)


def test_scope_key_distinguishes_field_and_dimension():
    a = Scope("u", field="x", partner="p")
    b = Scope("u", dimension="x", partner="p")
    c = Scope("u", field="x", partner_category="p")
    assert len({a.key, b.key, c.key}) == 3
