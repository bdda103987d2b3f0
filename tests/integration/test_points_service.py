"""The points ledger on SQLite and PostgreSQL: earning, expiry, redemption, idempotency, corrections."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dataspace.catalog.models import Field
from dataspace.context import Context
from dataspace.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from dataspace.points import corrections as points_corrections
from dataspace.points import earning as points_earning
from dataspace.points import ledger as points_ledger
from dataspace.points import queries as points_queries
from dataspace.points import redemption as points_redemption
from dataspace.points import rewards
from dataspace.points.models import ImmutablePostingError, PointsAccount, PointsPosting, Redemption, Reward
from dataspace.points.schemas import RewardCreate, RewardUpdate
from tests.conftest import truncate_all
from tests.factories.catalog import load_demo_catalog
from tests.factories.points import NOW, assert_consistent, balance, give, make_reward, make_subjects


def posting_count(ctx: Context) -> int:
    with ctx.db.session() as session:
        return session.scalar(select(func.count()).select_from(PointsPosting)) or 0


def test_authorization_bonus_is_earned_once_per_field(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    for expected in (100, 0, 0):  # grant, withdraw + grant again, once more: never re-earned
        with ctx.db.transaction() as session:
            got = points_earning.award_authorization_bonus(
                session, subject_id=alice, field_key="income", points=100, now=NOW
            )
        assert got == expected
    with ctx.db.transaction() as session:
        assert (
            points_earning.award_authorization_bonus(session, subject_id=alice, field_key="city", points=50, now=NOW)
            == 50
        )
    assert balance(ctx, alice) == 150
    with ctx.db.session() as session:
        page = points_queries.list_postings(session, subject_id=alice)
    assert [p.amount for p in page.items] == [50, 100]
    assert all(p.kind == "authorization_bonus" and p.reason.startswith("Bonus for authorizing") for p in page.items)
    assert_consistent(ctx)


def test_bonus_value_comes_from_the_catalog(ctx: Context) -> None:
    load_demo_catalog(ctx)
    (alice,) = make_subjects(ctx)
    with ctx.db.session() as session:
        valuable = session.scalars(select(Field).where(Field.points_value > 0)).first()
        worthless = session.scalars(select(Field).where(Field.points_value == 0)).first()
    assert valuable is not None
    with ctx.db.transaction() as session:
        assert points_earning.award_authorization_bonus(session, subject_id=alice, field_key=valuable.key, now=NOW) == (
            valuable.points_value
        )
        if worthless is not None:
            assert (
                points_earning.award_authorization_bonus(session, subject_id=alice, field_key=worthless.key, now=NOW)
                == 0
            )
        assert (
            points_earning.usage_points(session, [valuable.key, "no-such-field"])
            == points_earning.USAGE_POINTS_PER_FIELD
        )
    with ctx.db.session() as session:
        (posting,) = points_queries.list_postings(session, subject_id=alice).items
    assert valuable.label in posting.reason
    assert_consistent(ctx)


def test_usage_points_are_idempotent_per_job_and_subject(ctx: Context) -> None:
    a, b, c = make_subjects(ctx, 3)
    with ctx.db.transaction() as session:
        assert (
            points_earning.award_usage(session, job_id="job-1", credits=[(a, 2), (b, 3), (a, 1), (c, 0)], now=NOW) == 2
        )
    with ctx.db.transaction() as session:  # the job reports again (retry): nobody is paid twice
        assert points_earning.award_usage(session, job_id="job-1", credits=[(a, 3), (b, 3), (c, 4)], now=NOW) == 1
    with ctx.db.transaction() as session:
        assert points_earning.award_usage(session, job_id="job-2", credits=[(a, 1)], now=NOW) == 1
    assert (balance(ctx, a), balance(ctx, b), balance(ctx, c)) == (4, 3, 4)
    with ctx.db.session() as session:
        assert {p.reference for p in points_queries.list_postings(session, subject_id=a).items} == {
            "job:job-1",
            "job:job-2",
        }
    with pytest.raises(InvalidInput), ctx.db.transaction() as session:
        points_earning.award_usage(session, job_id="job-3", credits=[(a, -1)], now=NOW)
    assert_consistent(ctx)


def test_redemption_is_idempotent_and_conflicts_on_a_different_body(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    make_reward(ctx, "lounge", cost=100, stock=3)
    make_reward(ctx, "checkup", cost=50, stock=3)
    give(ctx, alice, 250)
    with ctx.db.transaction() as session:
        first = points_redemption.redeem(session, subject_id=alice, reward_key="lounge", idempotency_key="k-1", now=NOW)
    assert not first.replayed
    assert (first.redemption.cost, first.redemption.balance_after) == (100, 150)
    postings = posting_count(ctx)
    with ctx.db.transaction() as session:
        again = points_redemption.redeem(session, subject_id=alice, reward_key="lounge", idempotency_key="k-1", now=NOW)
    assert again.replayed
    assert again.redemption == first.redemption
    assert posting_count(ctx) == postings
    with pytest.raises(Conflict, match="different request"), ctx.db.transaction() as session:
        points_redemption.redeem(session, subject_id=alice, reward_key="checkup", idempotency_key="k-1", now=NOW)
    with pytest.raises(Conflict), ctx.db.transaction() as session:
        points_redemption.redeem(
            session, subject_id=alice, reward_key="lounge", idempotency_key="k-1", quantity=2, now=NOW
        )
    assert balance(ctx, alice) == 150
    with ctx.db.session() as session:
        assert [r.id for r in points_queries.list_redemptions(session, subject_id=alice)] == [first.redemption.id]
        assert session.scalar(select(Reward.stock).where(Reward.key == "lounge")) == 2
    assert_consistent(ctx)


def test_failed_redemptions_store_nothing_and_the_key_can_be_retried(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    make_reward(ctx, "lounge", cost=100, stock=1)
    give(ctx, alice, 60)
    with pytest.raises(InsufficientFunds), ctx.db.transaction() as session:
        points_redemption.redeem(session, subject_id=alice, reward_key="lounge", idempotency_key="k", now=NOW)
    with pytest.raises(NotFound), ctx.db.transaction() as session:
        points_redemption.redeem(session, subject_id=alice, reward_key="nothing", idempotency_key="k", now=NOW)
    with pytest.raises(InvalidInput), ctx.db.transaction() as session:
        points_redemption.redeem(session, subject_id=alice, reward_key="lounge", idempotency_key="bad key!", now=NOW)
    give(ctx, alice, 200)
    with ctx.db.transaction() as session:
        assert points_redemption.redeem(
            session, subject_id=alice, reward_key="lounge", idempotency_key="k", now=NOW
        ).redemption
    with pytest.raises(InsufficientFunds, match="out of stock"), ctx.db.transaction() as session:
        points_redemption.redeem(session, subject_id=alice, reward_key="lounge", idempotency_key="k2", now=NOW)
    assert balance(ctx, alice) == 160
    assert_consistent(ctx)


def test_lots_are_spent_soonest_expiry_first_and_expire(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    make_reward(ctx, "coffee", cost=70, stock=10)
    give(ctx, alice, 100, valid_for=timedelta(days=200))  # lot A, expires later
    give(ctx, alice, 50, valid_for=timedelta(days=10))  # lot B, expires sooner
    give(ctx, alice, 30, valid_for=None)  # never expires
    with ctx.db.transaction() as session:  # 70 = all of B (50) + 20 of A
        points_redemption.redeem(session, subject_id=alice, reward_key="coffee", idempotency_key="c1", now=NOW)
    with ctx.db.session() as session:
        summary = points_queries.get_summary(session, subject_id=alice, now=NOW)
    assert summary.balance == 110
    assert summary.expiring_soon == []  # B is used up; A is not due within 30 days
    later = NOW + timedelta(days=190)
    with ctx.db.session() as session:
        (soon,) = points_queries.get_summary(session, subject_id=alice, now=later).expiring_soon
    assert soon.remaining == 80
    after = NOW + timedelta(days=201)
    assert balance(ctx, alice, after) == 30  # unswept expired points are not shown as spendable
    with ctx.db.transaction() as session:
        assert points_ledger.expire_points(session, now=after) == points_ledger.ExpiryResult(lots=1, points=80)
    with ctx.db.transaction() as session:
        assert points_ledger.expire_points(session, now=after) == points_ledger.ExpiryResult(lots=0, points=0)
    with ctx.db.session() as session:
        assert points_queries.list_postings(session, subject_id=alice).items[0].kind == "expiry"
        assert points_ledger.system_balance(session, "expiry_sink") == 80
    assert balance(ctx, alice, after) == 30
    assert_consistent(ctx)


def test_redemption_expires_due_points_before_spending(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    make_reward(ctx, "coffee", cost=70, stock=10)
    give(ctx, alice, 100, valid_for=timedelta(days=1))
    with pytest.raises(InsufficientFunds), ctx.db.transaction() as session:
        points_redemption.redeem(
            session, subject_id=alice, reward_key="coffee", idempotency_key="c1", now=NOW + timedelta(days=2)
        )
    give(ctx, alice, 80, valid_for=None)
    with ctx.db.transaction() as session:
        result = points_redemption.redeem(
            session, subject_id=alice, reward_key="coffee", idempotency_key="c1", now=NOW + timedelta(days=2)
        )
    assert result.redemption.balance_after == 10
    assert_consistent(ctx)


def test_corrections_are_new_postings_and_postings_are_immutable(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    give(ctx, alice, 100)
    with ctx.db.transaction() as session:
        tx = points_corrections.post_correction(
            session, subject_id=alice, amount=-40, reason="Bonus paid twice", idempotency_key="fix-1", now=NOW
        )
        tx_id = tx.id
    with ctx.db.transaction() as session:  # retried: the same correction, not a second one
        assert (
            points_corrections.post_correction(
                session, subject_id=alice, amount=-40, reason="Bonus paid twice", idempotency_key="fix-1", now=NOW
            ).id
            == tx_id
        )
    with pytest.raises(Conflict), ctx.db.transaction() as session:
        points_corrections.post_correction(
            session, subject_id=alice, amount=-41, reason="Bonus paid twice", idempotency_key="fix-1", now=NOW
        )
    with pytest.raises(InsufficientFunds), ctx.db.transaction() as session:
        points_corrections.post_correction(
            session, subject_id=alice, amount=-61, reason="too much", idempotency_key="fix-2", now=NOW
        )
    with ctx.db.transaction() as session:
        points_corrections.post_correction(
            session,
            subject_id=alice,
            amount=15,
            reason="Goodwill",
            idempotency_key="fix-3",
            now=NOW,
            corrects_transaction_id=tx_id,
        )
    assert balance(ctx, alice) == 75
    with ctx.db.session() as session:
        assert points_queries.get_summary(session, subject_id=alice, now=NOW).lifetime_earned == 75
    with ctx.db.transaction() as session:
        posting = session.scalars(select(PointsPosting)).first()
        assert posting is not None
        posting.amount += 1
        with pytest.raises(ImmutablePostingError):
            session.flush()
        session.rollback()
    with ctx.db.transaction() as session:
        session.delete(session.scalars(select(PointsPosting)).first())
        with pytest.raises(ImmutablePostingError):
            session.flush()
        session.rollback()
    assert_consistent(ctx)


def test_the_database_refuses_a_negative_customer_balance(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    give(ctx, alice, 10)
    with pytest.raises(IntegrityError), ctx.db.transaction() as session:
        session.execute(update(PointsAccount).where(PointsAccount.subject_id == alice).values(balance=-1))
    with pytest.raises(IntegrityError), ctx.db.transaction() as session:
        session.execute(insert(Reward).values(key="x", name="x", cost=1, stock=-1, description="", i18n={}))


def test_unbalanced_transactions_are_refused(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    with ctx.db.transaction() as session:
        acc = points_ledger.lock_customer(session, alice)
        with pytest.raises(points_ledger.UnbalancedTransactionError):
            points_ledger.record_transaction(
                session, kind="correction", key="x", legs=[(acc.id, 5)], reason="", now=NOW
            )


def test_statement_pagination_and_tiers(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    with ctx.db.transaction() as session:
        for i in range(7):
            points_earning.award_authorization_bonus(session, subject_id=alice, field_key=f"f{i}", points=200, now=NOW)
    seen: list[int] = []
    before = None
    while True:
        with ctx.db.session() as session:
            page = points_queries.list_postings(session, subject_id=alice, limit=3, before=before)
        seen += [p.id for p in page.items]
        if page.next_before is None:
            break
        before = page.next_before
    assert len(seen) == 7
    assert seen == sorted(seen, reverse=True)
    with ctx.db.session() as session:
        summary = points_queries.get_summary(session, subject_id=alice, now=NOW)
    assert summary.tier.name == "silver"
    assert (summary.tier.next_tier, summary.tier.points_to_next_tier) == ("gold", 3600)
    assert len(summary.recent) == 7


def test_reward_catalog_management(ctx: Context) -> None:
    make_reward(ctx, "lounge", cost=100, stock=1)
    with pytest.raises(Conflict), ctx.db.transaction() as session:
        rewards.create_reward(session, data=RewardCreate(key="lounge", name="x", cost=1, stock=1))
    with ctx.db.transaction() as session:
        updated = rewards.update_reward(session, key="lounge", data=RewardUpdate(cost=120, stock_delta=4))
    assert (updated.cost, updated.stock) == (120, 5)
    with pytest.raises(Conflict), ctx.db.transaction() as session:
        rewards.update_reward(session, key="lounge", data=RewardUpdate(stock_delta=-6))
    with ctx.db.transaction() as session:
        rewards.update_reward(session, key="lounge", data=RewardUpdate(active=False))
    with ctx.db.session() as session:
        assert rewards.list_rewards(session) == []
        assert [r.key for r in rewards.list_rewards(session, include_inactive=True)] == ["lounge"]
    with pytest.raises(NotFound), ctx.db.transaction() as session:
        rewards.update_reward(session, key="nope", data=RewardUpdate(cost=1))


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("bonus"), st.integers(0, 2), st.integers(1, 300), st.sampled_from([None, 5, 40])),
        st.tuples(st.just("usage"), st.integers(0, 2), st.integers(1, 20), st.sampled_from(["j1", "j2", "j3"])),
        st.tuples(st.just("redeem"), st.integers(0, 2), st.integers(1, 3), st.sampled_from(["k1", "k2", "k3"])),
        st.tuples(st.just("correct"), st.integers(0, 2), st.integers(-150, 150), st.integers(0, 3)),
        st.tuples(st.just("wait"), st.integers(0, 0), st.integers(1, 30), st.just(None)),
    ),
    max_size=25,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_sequence_of_operations_keeps_the_ledger_balanced(ctx: Context, ops: list[tuple]) -> None:
    truncate_all(ctx.db)
    subjects = make_subjects(ctx, 3)
    make_reward(ctx, "a", cost=60, stock=4)
    now = NOW
    for n, (op, who, amount, extra) in enumerate(ops):
        subject = subjects[who]
        try:
            with ctx.db.transaction() as session:
                if op == "bonus":
                    valid = timedelta(days=extra) if extra else None
                    points_earning.award_authorization_bonus(
                        session, subject_id=subject, field_key=f"f{amount % 4}", points=amount, now=now, valid_for=valid
                    )
                elif op == "usage":
                    points_earning.award_usage(
                        session, job_id=extra, credits=[(subject, amount)], now=now, valid_for=timedelta(days=20)
                    )
                elif op == "redeem":
                    points_redemption.redeem(
                        session, subject_id=subject, reward_key="a", quantity=amount, idempotency_key=extra, now=now
                    )
                elif op == "correct" and amount:
                    points_corrections.post_correction(
                        session, subject_id=subject, amount=amount, reason="fix", idempotency_key=f"c{n}", now=now
                    )
                elif op == "wait":
                    now += timedelta(days=amount)
                    points_ledger.expire_points(session, now=now)
        except (InsufficientFunds, Conflict):
            pass
        assert_consistent(ctx)
    with ctx.db.session() as session:
        sold = session.scalar(select(func.coalesce(func.sum(Redemption.quantity), 0)))
        assert sold + session.scalar(select(Reward.stock)) == 4
