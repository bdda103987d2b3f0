"""Corrections: a steward fixes a customer's balance with a new transaction (postings are never edited)."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.errors import Conflict, InsufficientFunds, InvalidInput, NotFound
from dataspace.points.earning import credit
from dataspace.points.ledger import (
    ISSUANCE,
    balance_of,
    check_idempotency_key,
    consume_lots,
    expire_locked,
    lock_customer,
    move_customer,
    record_transaction,
    request_digest,
    system_account,
)
from dataspace.points.models import (
    PointsTransaction,
)
from dataspace.principal import Principal


def post_correction(
    session: Session,
    *,
    subject_id: int,
    amount: int,
    reason: str,
    idempotency_key: str,
    now: datetime,
    corrects_transaction_id: int | None = None,
    valid_for: timedelta | None = None,
    actor: Principal | None = None,
) -> PointsTransaction:
    """Fix a customer's balance with a new transaction (postings are never edited).

    A positive amount is issued to the customer; a negative one is returned to issuance (and can never
    overdraw). Retrying with the same key and request returns the first correction.
    """
    check_idempotency_key(idempotency_key)
    if amount == 0 or not reason.strip():
        raise InvalidInput("a correction needs a non-zero amount and a reason")
    key = f"correction:{idempotency_key}"
    request_hash = request_digest(
        {"subject_id": subject_id, "amount": amount, "reason": reason, "corrects": corrects_transaction_id}
    )
    account = lock_customer(session, subject_id)
    previous = session.scalars(select(PointsTransaction).where(PointsTransaction.idempotency_key == key)).first()
    if previous is not None:
        if hmac.compare_digest(previous.request_hash or "", request_hash):
            return previous
        raise Conflict("This correction key was already used with a different correction.")
    if corrects_transaction_id is not None and session.get(PointsTransaction, corrects_transaction_id) is None:
        raise NotFound("The transaction to correct does not exist.")
    if amount > 0:
        tx = credit(
            session,
            account,
            kind="correction",
            key=key,
            points=amount,
            reason=reason,
            reference=None,
            now=now,
            valid_for=valid_for,
            request_hash=request_hash,
            corrects_id=corrects_transaction_id,
        )
    else:
        expire_locked(session, account.id, now)
        if balance_of(session, account.id) < -amount:
            raise InsufficientFunds("The correction would make the balance negative.")
        tx = record_transaction(
            session,
            kind="correction",
            key=key,
            legs=[(account.id, amount), (system_account(session, ISSUANCE), -amount)],
            reason=reason,
            now=now,
            request_hash=request_hash,
            corrects_id=corrects_transaction_id,
        )
        consume_lots(session, account.id, -amount, now)
        move_customer(session, account.id, amount, earned=amount)
    record_event(
        session,
        actor=actor,
        action="points.corrected",
        target=f"subject:{subject_id}",
        details={"transaction": tx.id, "amount": amount},
    )
    return tx
