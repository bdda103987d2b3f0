"""``dataspace budgets ...``: partners' privacy budgets (epsilon per purpose)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from dataspace.cli._steward import STEWARD, opened_context, write_as
from dataspace.cli.common import console, one_line_errors

app = typer.Typer(no_args_is_help=True, help="Partners' privacy budgets (epsilon per purpose).")


@app.command("list")
@one_line_errors
def budgets_list() -> None:
    """Every partner's budget per purpose: total, spent, remaining epsilon."""
    from sqlalchemy import select

    from dataspace.agreements.contracts import MICRO
    from dataspace.agreements.models import PrivacyBudget
    from dataspace.partners.models import Partner

    table = Table("partner", "purpose", "total ε", "spent ε", "remaining ε")
    with opened_context() as ctx, ctx.db.session() as session:
        stmt = select(PrivacyBudget, Partner.key).join(Partner, Partner.id == PrivacyBudget.partner_id)
        for b, key in session.execute(stmt.order_by(Partner.key, PrivacyBudget.purpose_key)):
            total, spent = b.micro_epsilon_total / MICRO, b.micro_epsilon_spent / MICRO
            table.add_row(key, b.purpose_key, f"{total:g}", f"{spent:g}", f"{total - spent:g}")
    console.print(table)


@app.command("set")
@one_line_errors
def budgets_set(partner: str, purpose: str, epsilon: float, steward: str = STEWARD) -> None:
    """Set a partner's total privacy budget for a purpose (never below what it already spent)."""
    from dataspace.agreements import contracts

    def set_budget(session: Any, principal: Any) -> str:
        b = contracts.set_budget(
            session, principal=principal, partner_key=partner, purpose_key=purpose, epsilon_total=epsilon
        )
        m = contracts.MICRO
        return (
            f"{partner} / {purpose}: total ε {b.micro_epsilon_total / m:g}, "
            f"remaining {(b.micro_epsilon_total - b.micro_epsilon_spent) / m:g}"
        )

    console.print(write_as(set_budget, steward), highlight=False)
