"""Paying for a job from the (partner, purpose) privacy budget: at submission, whatever the outcome.

A job pays its contract's ``epsilon_per_release`` when it is submitted, before any data is touched: a job
that fails keeps it spent (failures cannot be repeated for free), a job that succeeds has its one DP
release paid already (``dataspace.jobs.release`` charges nothing more), and a job the partner cancels before
its outcome shows gets it back (it revealed nothing). The budget thus changes only at moments the partner
chooses, never when a job ends, so the budget view carries no timing either. Integer micro-epsilon, with
the "never overspent" rule an atomic conditional UPDATE backed by the table's CHECK.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from dataspace.agreements import contracts
from dataspace.agreements.models import PrivacyBudget
from dataspace.db import utcnow
from dataspace.errors import BudgetExceeded


def charge(session: Session, *, partner_id: int, purpose_key: str, micro: int) -> None:
    """Spend ``micro`` micro-epsilon, or raise ``BudgetExceeded`` and spend nothing."""
    spent = session.execute(
        update(PrivacyBudget)
        .where(
            PrivacyBudget.partner_id == partner_id,
            PrivacyBudget.purpose_key == purpose_key,
            PrivacyBudget.micro_epsilon_spent + micro <= PrivacyBudget.micro_epsilon_total,
        )
        .values(micro_epsilon_spent=PrivacyBudget.micro_epsilon_spent + micro, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if getattr(spent, "rowcount", 0) != 1:
        raise BudgetExceeded(
            f"a job under this contract costs epsilon {micro / contracts.MICRO:g}, more than the privacy budget "
            f"left for purpose {purpose_key!r}"
        )


def refund(session: Session, *, partner_id: int, purpose_key: str, micro: int) -> None:
    if micro <= 0:
        return
    session.execute(
        update(PrivacyBudget)
        .where(
            PrivacyBudget.partner_id == partner_id,
            PrivacyBudget.purpose_key == purpose_key,
            PrivacyBudget.micro_epsilon_spent >= micro,
        )
        .values(micro_epsilon_spent=PrivacyBudget.micro_epsilon_spent - micro, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
