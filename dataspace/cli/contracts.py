"""``dataspace contracts ...``: a steward lists, approves, rejects and revokes partner data contracts."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from dataspace.cli._steward import STEWARD, opened_context, two_person, write_as
from dataspace.cli.common import console, one_line_errors

app = typer.Typer(no_args_is_help=True, help="Partner data contracts: list, approve, reject, revoke.")


@app.command("list")
@one_line_errors
def contracts_list(status: str | None = typer.Option(None, help="proposed, approved, rejected or revoked.")) -> None:
    """Contracts with their partner, purpose, fields and approvals."""
    from dataspace.agreements import contracts
    from dataspace.partners.models import Partner

    table = Table("id", "partner", "purpose", "status", "sensitive", "fields", "approvals")
    with opened_context() as ctx, ctx.db.session() as session:
        for c in contracts.list_all(session, status=status):
            partner = session.get(Partner, c.partner_id)
            approvals = [a.steward for a in contracts.approvals(session, c.id)]
            table.add_row(
                str(c.id),
                partner.key if partner else "?",
                c.purpose_key,
                c.status,
                "yes (2 stewards)" if c.sensitive else "no",
                ", ".join(f"{f['field']}:{f['transform']}" for f in c.features),
                two_person(c, approvals) or "-",
            )
    console.print(table)


@app.command("approve")
@one_line_errors
def contracts_approve(contract_id: int, steward: str = STEWARD) -> None:
    """Approve a proposed contract (a sensitive one needs two different stewards)."""
    from dataspace.agreements import contracts

    def approve(session: Any, principal: Any) -> str:
        c = contracts.approve(session, principal=principal, contract_id=contract_id)
        return f"contract {c.id} {c.status}: " + two_person(c, [a.steward for a in contracts.approvals(session, c.id)])

    console.print(write_as(approve, steward), highlight=False)


@app.command("reject")
@one_line_errors
def contracts_reject(contract_id: int, steward: str = STEWARD, reason: str = typer.Option("", max=1000)) -> None:
    """Reject a proposed contract (for good: it can no longer be approved)."""
    from dataspace.agreements import contracts

    def reject(session: Any, principal: Any) -> str:
        c = contracts.reject(session, principal=principal, contract_id=contract_id, reason=reason)
        return f"contract {c.id} rejected"

    console.print(write_as(reject, steward), highlight=False)


@app.command("revoke")
@one_line_errors
def contracts_revoke(contract_id: int, steward: str = STEWARD, reason: str = typer.Option("", max=1000)) -> None:
    """Revoke an approved contract: no new job starts under it, and its offer leaves the consent screens."""
    from dataspace.jobs import revocation

    def revoke(session: Any, principal: Any) -> str:
        c = revocation.revoke(session, principal=principal, contract_id=contract_id, reason=reason)
        return f"contract {c.id} revoked"

    console.print(write_as(revoke, steward), highlight=False)
