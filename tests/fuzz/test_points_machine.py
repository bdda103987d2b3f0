"""A hypothesis state machine over the points ledger (both databases): bonuses, usage credits, redemptions
with random and repeated Idempotency-Keys, corrections, and expiry as time moves on, each in its own unit
of work, checked after every step against the ledger's own invariants and a reference model of the lots.

The reference model: each credit is a lot (amount, expiry); expiry empties the lots due; spending takes
from the soonest-expiring live lots first; a balance is the sum of what the lots have left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import select

from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import Conflict, InsufficientFunds, InvalidInput
from dataspace.points import corrections as points_corrections
from dataspace.points import earning, redemption, rewards
from dataspace.points import invariants as points_invariants
from dataspace.points import ledger as points_ledger
from dataspace.points import queries as points_queries
from dataspace.points.models import PointsAccount, Reward
from dataspace.points.schemas import RewardCreate
from tests.conftest import truncate_all
from tests.factories.identities import make_subject

MACHINE_SETTINGS = settings(
    max_examples=15,
    stateful_step_count=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
REWARDS = {"lounge": (30, 4), "coffee": (7, 100)}  # key: (cost, stock)
FIELDS = ("age", "city", "ev_owner")
KEYS = st.sampled_from(["k1", "k2", "k3", "bad key!"])  # few keys, so they repeat; one is malformed
VALIDITY = st.sampled_from([timedelta(days=1), timedelta(days=30), timedelta(days=365), None])


@dataclass
class Lot:
    remaining: int
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.remaining > 0 and (self.expires_at is None or self.expires_at > now)


@dataclass
class Customer:
    lots: list[Lot] = field(default_factory=list)
    bonus_fields: set[str] = field(default_factory=set)

    def expire(self, now: datetime) -> None:
        for lot in self.lots:
            if lot.expires_at is not None and lot.expires_at <= now:
                lot.remaining = 0

    @property
    def balance(self) -> int:
        return sum(lot.remaining for lot in self.lots)

    def spendable(self, now: datetime) -> int:
        return sum(lot.remaining for lot in self.lots if lot.live(now))

    def spend(self, amount: int, now: datetime) -> None:
        order = sorted(
            (lot for lot in self.lots if lot.live(now)),
            key=lambda lot: (lot.expires_at is None, lot.expires_at or now),
        )
        for lot in order:
            take = min(amount, lot.remaining)
            lot.remaining -= take
            amount -= take
        assert amount == 0


def test_points_ledger_state_machine(ctx: Context) -> None:
    database = ctx.db

    class PointsLedger(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            truncate_all(database)
            self.now = utcnow()
            self.subjects = [make_subject(ctx) for _ in range(2)]
            self.model = {s: Customer() for s in self.subjects}
            self.stock = {key: stock for key, (_, stock) in REWARDS.items()}
            self.redemptions: dict[tuple[int, str], tuple[tuple[str, int], dict[str, object]]] = {}
            self.usage_done: set[tuple[int, int]] = set()
            self.corrections: dict[str, tuple[int, int]] = {}
            with database.transaction() as session:
                for key, (cost, stock) in REWARDS.items():
                    rewards.create_reward(session, data=RewardCreate(key=key, name=key, cost=cost, stock=stock))

        # --- rules --------------------------------------------------------------------------------------
        @rule(who=st.integers(0, 1), field_key=st.sampled_from(FIELDS), amount=st.integers(1, 120), valid=VALIDITY)
        def award_bonus(self, who: int, field_key: str, amount: int, valid: timedelta | None) -> None:
            subject = self.subjects[who]
            with database.transaction() as session:
                got = earning.award_authorization_bonus(
                    session, subject_id=subject, field_key=field_key, now=self.now, points=amount, valid_for=valid
                )
            customer = self.model[subject]
            if field_key in customer.bonus_fields:
                assert got == 0, "a bonus is earned once per field"
                return
            assert got == amount
            customer.bonus_fields.add(field_key)
            customer.lots.append(Lot(amount, self.now + valid if valid else None))

        @rule(job=st.integers(1, 3), amounts=st.lists(st.integers(0, 25), min_size=2, max_size=2))
        def award_usage(self, job: int, amounts: list[int]) -> None:
            credits = list(zip(self.subjects, amounts, strict=True))
            with database.transaction() as session:
                credited = earning.award_usage(session, job_id=job, credits=credits, now=self.now)
            expected = 0
            for subject, amount in credits:
                if amount > 0 and (job, subject) not in self.usage_done:
                    self.usage_done.add((job, subject))
                    self.model[subject].lots.append(Lot(amount, self.now + earning.DEFAULT_VALIDITY))
                    expected += 1
            assert credited == expected, "usage is credited once per (job, customer)"

        @rule(who=st.integers(0, 1), reward=st.sampled_from(sorted(REWARDS)), quantity=st.integers(1, 3), key=KEYS)
        def redeem(self, who: int, reward: str, quantity: int, key: str) -> None:
            subject = self.subjects[who]
            customer = self.model[subject]
            try:
                with database.transaction() as session:
                    result = redemption.redeem(
                        session,
                        subject_id=subject,
                        reward_key=reward,
                        idempotency_key=key,
                        quantity=quantity,
                        now=self.now,
                    )
            except InvalidInput:
                assert key == "bad key!"
                return
            except Conflict:
                previous = self.redemptions.get((subject, key))
                assert previous is not None, "a conflict needs an earlier use of the key"
                assert previous[0] != (reward, quantity), "only a different request conflicts"
                return
            except InsufficientFunds:
                assert (subject, key) not in self.redemptions
                cost = REWARDS[reward][0] * quantity  # (the attempt rolled back, its expiry postings too)
                assert customer.spendable(self.now) < cost or self.stock[reward] < quantity
                return
            stored = self.redemptions.get((subject, key))
            if stored is not None:
                assert result.replayed
                assert stored[0] == (reward, quantity)
                assert result.redemption.model_dump(mode="json") == stored[1], "a replay returns the same result"
                return
            assert not result.replayed
            assert key != "bad key!"
            cost = REWARDS[reward][0] * quantity
            customer.expire(self.now)
            assert customer.balance >= cost
            assert self.stock[reward] >= quantity
            customer.spend(cost, self.now)
            self.stock[reward] -= quantity
            assert result.redemption.cost == cost
            assert result.redemption.balance_after == customer.balance
            self.redemptions[(subject, key)] = ((reward, quantity), result.redemption.model_dump(mode="json"))

        @rule(
            who=st.integers(0, 1),
            amount=st.integers(-60, 60).filter(bool),
            key=st.sampled_from(["c1", "c2", "c3"]),
        )
        def correct(self, who: int, amount: int, key: str) -> None:
            subject = self.subjects[who]
            customer = self.model[subject]
            try:
                with database.transaction() as session:
                    points_corrections.post_correction(
                        session,
                        subject_id=subject,
                        amount=amount,
                        reason="fuzz",
                        idempotency_key=key,
                        now=self.now,
                    )
            except Conflict:
                assert key in self.corrections
                assert self.corrections[key] != (subject, amount)
                return
            except InsufficientFunds:
                assert amount < 0
                assert key not in self.corrections
                assert customer.spendable(self.now) < -amount
                return
            if key in self.corrections:
                assert self.corrections[key] == (subject, amount), "a retried correction is the same one"
                return
            self.corrections[key] = (subject, amount)
            if amount > 0:
                customer.lots.append(Lot(amount, None))
            else:
                customer.expire(self.now)
                assert customer.balance >= -amount
                customer.spend(-amount, self.now)

        @rule(days=st.sampled_from([0, 1, 2, 29, 31, 200, 366]))
        def advance_and_expire(self, days: int) -> None:
            self.now += timedelta(days=days)
            with database.transaction() as session:
                result = points_ledger.expire_points(session, now=self.now)
            before = sum(c.balance for c in self.model.values())
            for customer in self.model.values():
                customer.expire(self.now)
            assert result.points == before - sum(c.balance for c in self.model.values())
            with database.transaction() as session:
                again = points_ledger.expire_points(session, now=self.now)
            assert (again.lots, again.points) == (0, 0), "expiry runs once"

        @precondition(lambda self: bool(self.redemptions))
        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            """A retry, however much later, returns the first answer and posts nothing."""
            subject, key = data.draw(st.sampled_from(sorted(self.redemptions)))
            (reward, quantity), stored = self.redemptions[(subject, key)]
            with database.transaction() as session:
                result = redemption.redeem(
                    session, subject_id=subject, reward_key=reward, idempotency_key=key, quantity=quantity, now=self.now
                )
            assert result.replayed
            assert result.redemption.model_dump(mode="json") == stored

        @rule(who=st.integers(0, 1), reward=st.sampled_from(sorted(REWARDS)), key=KEYS)
        def replay_with_other_quantity(self, who: int, reward: str, key: str) -> None:
            """The same key with a different request is refused and changes nothing."""
            subject = self.subjects[who]
            stored = self.redemptions.get((subject, key))
            if stored is None or stored[0] == (reward, 99):
                return
            try:
                with database.transaction() as session:
                    redemption.redeem(
                        session, subject_id=subject, reward_key=reward, idempotency_key=key, quantity=99, now=self.now
                    )
            except Conflict:
                return
            raise AssertionError("reusing an Idempotency-Key for another request must conflict")

        # --- invariants ---------------------------------------------------------------------------------
        @invariant()
        def ledger_is_consistent(self) -> None:
            with database.session() as session:
                points_invariants.check_invariants(session)
                balances = dict(
                    session.execute(select(PointsAccount.subject_id, PointsAccount.balance).where(
                        PointsAccount.kind == "customer"
                    )).all()
                )  # fmt: skip
                stock = dict(session.execute(select(Reward.key, Reward.stock)).all())
            assert all(b >= 0 for b in balances.values()), f"negative balance: {balances}"
            for subject, customer in self.model.items():
                assert balances.get(subject, 0) == customer.balance, (subject, balances, customer)
            assert stock == self.stock

        @invariant()
        def summary_matches(self) -> None:
            with database.session() as session:
                for subject, customer in self.model.items():
                    summary = points_queries.get_summary(session, subject_id=subject, now=self.now)
                    assert summary.balance == customer.balance

    run_state_machine_as_test(PointsLedger, settings=MACHINE_SETTINGS)
