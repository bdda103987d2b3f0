"""``dataspace remote steward ...``: a steward's work against a running server, signed in as that steward
(``DATASPACE_CLIENT_ID=steward-cli``: the browser opens for the sign-in, PKCE, loopback redirect), so every
approval names who gave it and the two-person rule counts people."""

from __future__ import annotations

import typer

from clients.cli._common import base_url, console, credentials, sdk_errors
from clients.sdk import StewardClient
from clients.sdk.models import StewardContract

app = typer.Typer(no_args_is_help=True, help="Steward: contracts, models, budgets, jobs, requests.")

SCOPE = "catalog admin audit"


def _client() -> StewardClient:
    return StewardClient(base_url(), credentials(browser_ok=True, scope=SCOPE))


def _who(actor: str) -> str:
    return actor.split(":", 1)[-1]


def _two_person(c: StewardContract) -> str:
    names = ", ".join(_who(a) for a in c.approvals) or "nobody"
    if c.status != "proposed":
        return f"{c.status}; approved by {names}"
    missing = int(c.required_approvals) - len(c.approvals)
    return f"awaiting approval: approved by {names}; still needs {missing} more from a different steward"


@app.command("contracts")
@sdk_errors
def contracts(status: str | None = typer.Option(None, help="proposed, approved, rejected or revoked.")) -> None:
    """Contracts: partner, purpose, the fields read and how, who approved and who still must."""
    with _client() as client:
        for c in client.contracts(status=status):
            fields = ", ".join(f"{f.get('field')}:{f.get('transform')}" for f in c.features)
            sensitive = " SENSITIVE" if c.sensitive else ""
            console.print(
                f"{c.id:>5}  {c.partner_key} / {c.purpose}{sensitive}: {fields}\n"
                f"       k={c.k_min} epsilon/job={c.epsilon_per_release:g}; {_two_person(c)}",
                highlight=False,
                soft_wrap=True,
            )


@app.command("approve")
@sdk_errors
def approve(contract_id: int) -> None:
    """Approve a proposed contract as the signed-in steward."""
    with _client() as client:
        c = client.approve_contract(contract_id)
    console.print(f"contract {c.id}: {_two_person(c)}", highlight=False)


@app.command("reject")
@sdk_errors
def reject(contract_id: int, reason: str = typer.Option("", max=1000)) -> None:
    """Reject a proposed contract (for good)."""
    with _client() as client:
        c = client.reject_contract(contract_id, reason=reason)
    console.print(f"contract {c.id} {c.status}", highlight=False)


@app.command("revoke")
@sdk_errors
def revoke(contract_id: int, reason: str = typer.Option("", max=1000)) -> None:
    """Revoke an approved contract: no new job starts under it."""
    with _client() as client:
        c = client.revoke_contract(contract_id, reason=reason)
    console.print(f"contract {c.id} {c.status}", highlight=False)


@app.command("models")
@sdk_errors
def models() -> None:
    """Uploaded models; Python code awaiting review is ``uploaded``."""
    with _client() as client:
        for m in client.models():
            console.print(
                f"{m.id:>5}  contract {m.contract_id:<5} {m.kind:<7} {m.status:<10} {m.sha256[:16]}",
                highlight=False,
            )


@app.command("review")
@sdk_errors
def review(model_id: int) -> None:
    """A model for review: the checks it passed, its approvals and, for Python code, its source."""
    with _client() as client:
        r = client.model_review(model_id)
    m = r.model
    console.print(f"model {m.id} ({m.kind}) of {r.partner_key}: {m.status}", highlight=False)
    for check in r.checks:
        console.print(f"  passed: {check['check']}", highlight=False)
    if r.source is not None:
        approvals = ", ".join(_who(a) for a in r.approvals) or "none"
        console.print(f"approvals: {approvals} of {r.required_approvals} needed", highlight=False)
        console.rule("source")
        console.print(r.source, markup=False, highlight=False)


@app.command("approve-model")
@sdk_errors
def approve_model(model_id: int) -> None:
    """Approve Python code after reading it (``review``)."""
    with _client() as client:
        m = client.approve_model(model_id)
    console.print(f"model {m.id} {m.status}", highlight=False)


@app.command("reject-model")
@sdk_errors
def reject_model(model_id: int, reason: str = typer.Option("", max=1000)) -> None:
    """Reject Python code: it can never run."""
    with _client() as client:
        r = client.reject_model(model_id, reason=reason)
    console.print(f"model {r.model.id} {r.model.status}", highlight=False)


@app.command("budgets")
@sdk_errors
def budgets() -> None:
    """Every partner's privacy budget per purpose."""
    with _client() as client:
        for b in client.budgets():
            console.print(
                f"{b.partner_key:<20} {b.purpose:<20} {b.epsilon_remaining:g} of {b.epsilon_total:g} left",
                highlight=False,
            )


@app.command("set-budget")
@sdk_errors
def set_budget(partner: str, purpose: str, epsilon: float) -> None:
    """Set a partner's total privacy budget (epsilon) for a purpose."""
    with _client() as client:
        b = client.set_budget(partner=partner, purpose=purpose, epsilon_total=epsilon)
    console.print(f"{partner} / {b.purpose}: {b.epsilon_remaining:g} of {b.epsilon_total:g} left", highlight=False)


@app.command("jobs")
@sdk_errors
def jobs(status: str | None = typer.Option(None, help="queued, running, succeeded, failed or cancelled.")) -> None:
    """The job queue, newest first, with shards done and failure details."""
    with _client() as client:
        for j in client.jobs(status=status):
            shards = f"{j.shards_done}/{j.shards_total} shards" if j.shards_total else "whole"
            problem = j.error_detail or j.error or ""
            console.print(
                f"{j.id:>5}  {j.partner_key:<20} contract {j.contract_id:<5} {j.status:<10} {shards}"
                + (f"  {problem}" if problem else ""),
                highlight=False,
                soft_wrap=True,
            )


@app.command("requests")
@sdk_errors
def requests(kind: str | None = typer.Option(None, help="access or erasure")) -> None:
    """Access and erasure requests."""
    with _client() as client:
        for r in client.requests_log(kind=kind):
            console.print(
                f"{r.id:>5}  {r.kind:<8} subject {r.subject_id}  {r.requested_at}  {r.outcome or ''}",
                highlight=False,
                soft_wrap=True,
            )
