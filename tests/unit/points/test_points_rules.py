"""Pure rules of the points ledger: balance checks on postings, tiers, idempotency keys, request hashes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataspace.errors import InvalidInput
from dataspace.points import ledger as points_ledger
from dataspace.points import queries as points_queries

NOW = datetime(2025, 1, 1, tzinfo=UTC)
AMOUNTS = st.integers(min_value=-(10**12), max_value=10**12)


class _NoSession:
    """Stands in for a session the check must never reach: an unbalanced transaction is refused first."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"unbalanced postings reached the database ({name})")


@given(st.lists(st.tuples(st.integers(1, 5), AMOUNTS), min_size=1, max_size=8))
def test_postings_that_do_not_sum_to_zero_are_refused(legs: list[tuple[int, int]]) -> None:
    if sum(a for _, a in legs) == 0 and all(a != 0 for _, a in legs):
        return  # balanced: covered by the database tests
    with pytest.raises(points_ledger.UnbalancedTransactionError):
        points_ledger.record_transaction(_NoSession(), kind="correction", key="k", legs=legs, reason="", now=NOW)  # type: ignore[arg-type]


@given(st.integers(0, 10**9))
def test_tiers_follow_lifetime_points(earned: int) -> None:
    tier = points_queries.tier_for(earned)
    thresholds = dict(points_queries.TIERS)
    assert earned >= thresholds[tier.name]
    if tier.next_tier is None:
        assert tier.name == "gold"
    else:
        assert tier.points_to_next_tier == thresholds[tier.next_tier] - earned > 0


def test_tier_boundaries() -> None:
    assert [points_queries.tier_for(n).name for n in (0, 999, 1000, 4999, 5000)] == [
        "bronze",
        "bronze",
        "silver",
        "silver",
        "gold",
    ]


@pytest.mark.parametrize("key", ["", "a b", "é", "x" * 129, "a/b", "k\n"])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        points_ledger.check_idempotency_key(key)


@given(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True))
def test_good_idempotency_keys_pass(key: str) -> None:
    points_ledger.check_idempotency_key(key)


@given(st.text(max_size=20), st.integers(1, 100), st.text(max_size=20), st.integers(1, 100))
def test_request_hash_identifies_the_body(k1: str, q1: int, k2: str, q2: int) -> None:
    h1 = points_ledger.request_digest({"reward_key": k1, "quantity": q1})
    h2 = points_ledger.request_digest({"quantity": q2, "reward_key": k2})
    assert (h1 == h2) == ((k1, q1) == (k2, q2))
