"""Spending points on a reward, exactly once per Idempotency-Key, with a voucher code."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.db import insert_later
from dataspace.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from dataspace.points.ledger import (
    ACCOUNTS,
    LOTS_WITH_POINTS,
    POSTINGS,
    REDEMPTION_SINK,
    TRANSACTIONS,
    balance_of,
    check_balanced,
    check_idempotency_key,
    expire_locked,
    lock_customer,
    move_customer,
    request_digest,
    system_account,
    take_from_lots,
)
from dataspace.points.models import (
    Redemption,
    Reward,
)
from dataspace.points.schemas import (
    RedemptionRead,
)
from dataspace.principal import Principal


@dataclass(frozen=True)
class RedemptionResult:
    redemption: RedemptionRead
    replayed: bool


# The statements of a redemption, built once. The reward's row is the one lock every redemption of that
# reward shares: its stock is taken last, so the lock is held only from there to the commit.
_REWARDS: Table = Reward.__table__  # type: ignore[assignment]
_REDEMPTIONS: Table = Redemption.__table__  # type: ignore[assignment]
_LOCK_CUSTOMER_BALANCE = (
    select(ACCOUNTS.c.id, ACCOUNTS.c.balance)
    .where(ACCOUNTS.c.subject_id == bindparam("subject_id"))
    .with_for_update(key_share=True)
)
_PREVIOUS_REDEMPTION = select(_REDEMPTIONS.c.request_hash, _REDEMPTIONS.c.response).where(
    _REDEMPTIONS.c.subject_id == bindparam("subject_id"), _REDEMPTIONS.c.idempotency_key == bindparam("key")
)
_REWARD_BY_KEY = select(_REWARDS.c.id, _REWARDS.c.key, _REWARDS.c.name, _REWARDS.c.cost, _REWARDS.c.active).where(
    _REWARDS.c.key == bindparam("key")
)
_INSERT_TX = insert(TRANSACTIONS).returning(TRANSACTIONS.c.id)
_TAKE_STOCK = (
    update(_REWARDS)
    .where(
        _REWARDS.c.id == bindparam("b_id"),
        _REWARDS.c.stock >= bindparam("b_quantity"),
        _REWARDS.c.cost == bindparam("b_cost"),
        _REWARDS.c.active.is_(True),
    )
    .values(stock=_REWARDS.c.stock - bindparam("b_quantity"), version=_REWARDS.c.version + 1)
)
_INSERT_REDEMPTION = insert(_REDEMPTIONS).returning(_REDEMPTIONS.c.id)
_SET_REDEMPTION_RESPONSE = (
    update(_REDEMPTIONS)
    .where(_REDEMPTIONS.c.id == bindparam("b_id"))
    .values(response=bindparam("b_response", type_=_REDEMPTIONS.c.response.type))
)


# Crockford's base32 without I, L, O, U: easy to read out and type. 16 symbols = 80 random bits.
_VOUCHER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def voucher_code() -> str:
    """A fresh voucher code, ``XXXX-XXXX-XXXX-XXXX``; unguessable, so holding it is proof of the redemption."""
    symbols = "".join(secrets.choice(_VOUCHER_ALPHABET) for _ in range(16))
    return "-".join(symbols[i : i + 4] for i in range(0, 16, 4))


def redeem(
    session: Session,
    *,
    subject_id: int,
    reward_key: str,
    idempotency_key: str,
    now: datetime,
    quantity: int = 1,
    actor: Principal | None = None,
) -> RedemptionResult:
    """Spend points on a reward, exactly once per Idempotency-Key.

    The same key with the same request returns the stored result (``replayed=True``) and posts nothing;
    the same key with a different request raises ``Conflict``. A failed redemption (too few points, out of
    stock) stores nothing, so the key may be retried.
    """
    check_idempotency_key(idempotency_key)
    if not 1 <= quantity <= 100:
        raise InvalidInput("quantity must be between 1 and 100")
    request_hash = request_digest({"reward_key": reward_key, "quantity": quantity})
    conn = session.connection()
    locked = conn.execute(_LOCK_CUSTOMER_BALANCE, {"subject_id": subject_id}).first()
    if locked is None:  # no account yet: create it (and so hold no points)
        account_id, balance = lock_customer(session, subject_id).id, 0
    else:
        account_id, balance = int(locked[0]), int(locked[1])
    previous = conn.execute(_PREVIOUS_REDEMPTION, {"subject_id": subject_id, "key": idempotency_key}).first()
    if previous is not None:
        if hmac.compare_digest(previous[0], request_hash):
            return RedemptionResult(RedemptionRead.model_validate(previous[1]), replayed=True)
        raise Conflict("This Idempotency-Key was already used with a different request; use a new key.")

    reward = conn.execute(_REWARD_BY_KEY, {"key": reward_key}).first()
    if reward is None or not reward.active:
        raise NotFound(f"No reward '{reward_key}' is available.")
    lots = conn.execute(LOTS_WITH_POINTS, {"account_id": account_id}).all()
    live = [lot for lot in lots if lot.expires_at is None or lot.expires_at > now]
    if len(live) < len(lots):  # rare: some are due, expire them first (the live ones stay as read)
        expire_locked(session, account_id, now)
        balance = balance_of(session, account_id)
    cost = reward.cost * quantity
    if balance < cost:
        raise InsufficientFunds("Your points balance is too low for this reward.")
    legs = [(account_id, -cost), (system_account(session, REDEMPTION_SINK), cost)]
    check_balanced("redemption", legs)
    tx_id = int(
        conn.execute(
            _INSERT_TX,
            {
                "kind": "redemption",
                "idempotency_key": f"redeem:{subject_id}:{idempotency_key}",
                "request_hash": request_hash,
                "reason": f"Redeemed {quantity} x {reward.name}",
                "reference": f"reward:{reward.key}",
                "corrects_id": None,
                "created_at": now,
            },
        ).scalar_one()
    )
    for a, amount in legs:
        insert_later(session, POSTINGS, {"transaction_id": tx_id, "account_id": a, "amount": amount, "created_at": now})
    take_from_lots(session, live, cost)
    move_customer(session, account_id, -cost)
    if conn.execute(_TAKE_STOCK, {"b_id": reward.id, "b_quantity": quantity, "b_cost": reward.cost}).rowcount != 1:
        current = conn.execute(_REWARD_BY_KEY, {"key": reward_key}).one()
        if current.cost != reward.cost or not current.active:
            raise Conflict("The reward changed while you were redeeming it; please try again.")
        raise InsufficientFunds(f"'{reward.name}' is out of stock.")
    redemption_id = int(
        conn.execute(
            _INSERT_REDEMPTION,
            {
                "subject_id": subject_id,
                "reward_id": reward.id,
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                "quantity": quantity,
                "cost": cost,
                "status": "completed",
                "transaction_id": tx_id,
                "response": {},
                "created_at": now,
            },
        ).scalar_one()
    )
    read = RedemptionRead(
        id=redemption_id,
        reward_key=reward.key,
        reward_name=reward.name,
        quantity=quantity,
        cost=cost,
        status="completed",
        transaction_id=tx_id,
        balance_after=balance - cost,
        created_at=now,
        voucher_code=voucher_code(),
    )
    conn.execute(_SET_REDEMPTION_RESPONSE, {"b_id": redemption_id, "b_response": read.model_dump(mode="json")})
    record_event(
        session,
        actor=actor,
        action="reward.redeemed",
        target=f"redemption:{redemption_id}",
        details={"reward": reward.key, "quantity": quantity},
    )
    return RedemptionResult(read, replayed=False)
