"""``dataspace contracts|models|budgets|jobs ...``: the steward's work on the server's own command line.

A decision names the steward who takes it (``--steward NAME``, an enabled steward account): the two-person
rule counts stewards, and the audit trail records ``steward:NAME``. Whoever runs these commands already holds
the database and the key file; stewards without that access use the steward console or ``dataspace remote``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.table import Table

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

contracts_app = typer.Typer(no_args_is_help=True, help="Partner data contracts: list, approve, reject, revoke.")
models_app = typer.Typer(no_args_is_help=True, help="Partner models: list, review Python code, approve, reject.")
budgets_app = typer.Typer(no_args_is_help=True, help="Partners' privacy budgets (epsilon per purpose).")
jobs_app = typer.Typer(no_args_is_help=True, help="The job queue.")

T = TypeVar("T")
STEWARD = typer.Option(..., "--steward", help="The steward taking the decision (an enabled steward account).")


@contextmanager
def _context() -> Iterator[Any]:
    from dataspace.context import Context

    ctx = Context.open(Settings())
    try:
        yield ctx
    finally:
        ctx.close()


def _as_steward(session: Any, name: str) -> Any:
    from sqlalchemy import select

    from dataspace.auth.models import User
    from dataspace.auth.principal import Principal
    from dataspace.errors import InvalidInput

    user = session.scalar(select(User).where(User.username == name))
    if user is None or user.role != "steward" or user.disabled:
        raise InvalidInput(f"{name!r} is not an enabled steward account")
    return Principal(subject=user.username, role="steward", client_id="cli")


def _write(fn: Callable[[Any, Any], T], steward: str) -> T:
    with _context() as ctx, ctx.db.transaction() as session:
        return fn(session, _as_steward(session, steward))


def _two_person(contract: Any, approvals: list[str]) -> str:
    names = ", ".join(a.removeprefix("steward:") for a in approvals) or "nobody"
    if contract.status != "proposed":
        return f"approved by {names}" if approvals else ""
    missing = contract.required_approvals - len(approvals)
    return f"approved by {names}; still needs {missing} more approval(s) from a different steward"


@contracts_app.command("list")
@one_line_errors
def contracts_list(status: str | None = typer.Option(None, help="proposed, approved, rejected or revoked.")) -> None:
    """Contracts with their partner, purpose, fields and approvals."""
    from dataspace.jobs import contracts
    from dataspace.partners.models import Partner

    table = Table("id", "partner", "purpose", "status", "sensitive", "fields", "approvals")
    with _context() as ctx, ctx.db.session() as session:
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
                _two_person(c, approvals) or "-",
            )
    console.print(table)


@contracts_app.command("approve")
@one_line_errors
def contracts_approve(contract_id: int, steward: str = STEWARD) -> None:
    """Approve a proposed contract (a sensitive one needs two different stewards)."""
    from dataspace.jobs import contracts

    def approve(session: Any, principal: Any) -> str:
        c = contracts.approve(session, principal=principal, contract_id=contract_id)
        return f"contract {c.id} {c.status}: " + _two_person(c, [a.steward for a in contracts.approvals(session, c.id)])

    console.print(_write(approve, steward), highlight=False)


@contracts_app.command("reject")
@one_line_errors
def contracts_reject(contract_id: int, steward: str = STEWARD, reason: str = typer.Option("", max=1000)) -> None:
    """Reject a proposed contract (for good: it can no longer be approved)."""
    from dataspace.jobs import contracts

    def reject(session: Any, principal: Any) -> str:
        c = contracts.reject(session, principal=principal, contract_id=contract_id, reason=reason)
        return f"contract {c.id} rejected"

    console.print(_write(reject, steward), highlight=False)


@contracts_app.command("revoke")
@one_line_errors
def contracts_revoke(contract_id: int, steward: str = STEWARD, reason: str = typer.Option("", max=1000)) -> None:
    """Revoke an approved contract: no new job starts under it, and its offer leaves the consent screens."""
    from dataspace.jobs import contracts

    def revoke(session: Any, principal: Any) -> str:
        c = contracts.revoke(session, principal=principal, contract_id=contract_id, reason=reason)
        return f"contract {c.id} revoked"

    console.print(_write(revoke, steward), highlight=False)


@models_app.command("list")
@one_line_errors
def models_list() -> None:
    """Uploaded models; Python code waiting for review shows ``uploaded``."""
    from dataspace.jobs import uploads

    table = Table("id", "contract", "kind", "status", "size", "uploaded by", "approvals")
    with _context() as ctx, ctx.db.session() as session:
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


@models_app.command("review")
@one_line_errors
def models_review(model_id: int) -> None:
    """Show a model for review: the checks it passed at upload and, for Python, its source."""
    from dataspace.errors import NotFound
    from dataspace.jobs import contracts, uploads
    from dataspace.jobs.models import PartnerModel

    with _context() as ctx, ctx.db.session() as session:
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


@models_app.command("approve")
@one_line_errors
def models_approve(model_id: int, steward: str = STEWARD) -> None:
    """Approve Python code after reading it (a sensitive contract's code needs two different stewards)."""
    from dataspace.jobs import contracts, uploads

    def approve(session: Any, principal: Any) -> str:
        m = uploads.approve(session, principal=principal, model_id=model_id)
        required = contracts.get(session, contract_id=m.contract_id).required_approvals
        return f"model {m.id} {m.status} ({len(m.approvals)} of {required} approvals)"

    console.print(_write(approve, steward), highlight=False)


@models_app.command("reject")
@one_line_errors
def models_reject(model_id: int, steward: str = STEWARD, reason: str = typer.Option("", max=1000)) -> None:
    """Reject Python code: it can never run."""
    from dataspace.jobs import uploads

    def reject(session: Any, principal: Any) -> str:
        m = uploads.reject(session, principal=principal, model_id=model_id, reason=reason)
        return f"model {m.id} rejected"

    console.print(_write(reject, steward), highlight=False)


@budgets_app.command("list")
@one_line_errors
def budgets_list() -> None:
    """Every partner's budget per purpose: total, spent, remaining epsilon."""
    from sqlalchemy import select

    from dataspace.jobs.contracts import MICRO
    from dataspace.jobs.models import PrivacyBudget
    from dataspace.partners.models import Partner

    table = Table("partner", "purpose", "total ε", "spent ε", "remaining ε")
    with _context() as ctx, ctx.db.session() as session:
        stmt = select(PrivacyBudget, Partner.key).join(Partner, Partner.id == PrivacyBudget.partner_id)
        for b, key in session.execute(stmt.order_by(Partner.key, PrivacyBudget.purpose_key)):
            total, spent = b.micro_epsilon_total / MICRO, b.micro_epsilon_spent / MICRO
            table.add_row(key, b.purpose_key, f"{total:g}", f"{spent:g}", f"{total - spent:g}")
    console.print(table)


@budgets_app.command("set")
@one_line_errors
def budgets_set(partner: str, purpose: str, epsilon: float, steward: str = STEWARD) -> None:
    """Set a partner's total privacy budget for a purpose (never below what it already spent)."""
    from dataspace.jobs import contracts

    def set_budget(session: Any, principal: Any) -> str:
        b = contracts.set_budget(
            session, principal=principal, partner_key=partner, purpose_key=purpose, epsilon_total=epsilon
        )
        m = contracts.MICRO
        return (
            f"{partner} / {purpose}: total ε {b.micro_epsilon_total / m:g}, "
            f"remaining {(b.micro_epsilon_total - b.micro_epsilon_spent) / m:g}"
        )

    console.print(_write(set_budget, steward), highlight=False)


@jobs_app.command("list")
@one_line_errors
def jobs_list(
    status: str | None = typer.Option(None, help="queued, running, succeeded, failed or cancelled."),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """The newest jobs first, with their true state and, for a failure, the operator's detail."""
    from sqlalchemy import select

    from dataspace.jobs.models import Job
    from dataspace.partners.models import Partner

    table = Table("id", "partner", "contract", "status", "shards", "submitted", "finished", "problem")
    with _context() as ctx, ctx.db.session() as session:
        stmt = select(Job, Partner.key).join(Partner, Partner.id == Job.partner_id).order_by(Job.id.desc())
        if status:
            stmt = stmt.where(Job.status == status)
        for j, key in session.execute(stmt.limit(limit)):
            table.add_row(
                str(j.id),
                key,
                str(j.contract_id),
                j.status,
                str(j.shard_count or "-"),
                j.created_at.strftime("%Y-%m-%d %H:%M"),
                j.finished_at.strftime("%Y-%m-%d %H:%M") if j.finished_at else "-",
                j.error_detail or j.error or "",
            )
    console.print(table)
