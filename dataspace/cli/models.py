"""``dataspace models ...``: a steward reviews partner models (Python code by reading it) and decides."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from dataspace.cli._steward import STEWARD, opened_context, write_as
from dataspace.cli.common import console, one_line_errors

app = typer.Typer(no_args_is_help=True, help="Partner models: list, review Python code, approve, reject.")


@app.command("list")
@one_line_errors
def models_list() -> None:
    """Uploaded models; Python code waiting for review shows ``uploaded``."""
    from dataspace.jobs import uploads

    table = Table("id", "contract", "kind", "status", "size", "uploaded by", "approvals")
    with opened_context() as ctx, ctx.db.session() as session:
        for m in uploads.list_all(session):
            table.add_row(
                str(m.id),
                str(m.contract_id),
                m.kind,
                m.status,
                f"{m.size_bytes:,} B",
                m.uploaded_by,
                ", ".join(m.approvals) or "-",
            )
    console.print(table)


@app.command("review")
@one_line_errors
def models_review(model_id: int) -> None:
    """Show a model for review: the checks it passed at upload and, for Python, its source."""
    from dataspace.agreements import contracts
    from dataspace.agreements.models import PartnerModel
    from dataspace.errors import NotFound
    from dataspace.jobs import uploads

    with opened_context() as ctx, ctx.db.session() as session:
        m = session.get(PartnerModel, model_id)
        if m is None:
            raise NotFound("no such model")
        required = contracts.get(session, contract_id=m.contract_id).required_approvals
        console.print(
            f"model {m.id} ({m.kind}) for contract {m.contract_id}: {m.status}; sha256 {m.sha256}", highlight=False
        )
        for check in uploads.review_checks(m):
            extra = ", ".join(f"{k} {v}" for k, v in check.items() if k != "check")
            console.print(f"  passed: {check['check']}" + (f" ({extra})" if extra else ""), highlight=False)
        if m.kind == "python":
            console.print(f"approvals: {', '.join(m.approvals) or 'none'} of {required} needed", highlight=False)
            console.rule("source")
            console.print(m.data.decode("utf-8", errors="replace"), markup=False, highlight=False)


@app.command("approve")
@one_line_errors
def models_approve(model_id: int, steward: str = STEWARD) -> None:
    """Approve Python code after reading it (a sensitive contract's code needs two different stewards)."""
    from dataspace.agreements import contracts
    from dataspace.jobs import uploads

    def approve(session: Any, principal: Any) -> str:
        m = uploads.approve(session, principal=principal, model_id=model_id)
        required = contracts.get(session, contract_id=m.contract_id).required_approvals
        return f"model {m.id} {m.status} ({len(m.approvals)} of {required} approvals)"

    console.print(write_as(approve, steward), highlight=False)


@app.command("reject")
@one_line_errors
def models_reject(model_id: int, steward: str = STEWARD, reason: str = typer.Option("", max=1000)) -> None:
    """Reject Python code: it can never run."""
    from dataspace.jobs import uploads

    def reject(session: Any, principal: Any) -> str:
        m = uploads.reject(session, principal=principal, model_id=model_id, reason=reason)
        return f"model {m.id} rejected"

    console.print(write_as(reject, steward), highlight=False)
