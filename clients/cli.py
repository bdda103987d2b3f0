"""``dataspace remote ...``: commands that talk to a running server through the SDK.

Configuration from the environment: ``DATASPACE_URL`` (default http://127.0.0.1:8000), ``DATASPACE_CLIENT_ID``
and ``DATASPACE_CLIENT_SECRET`` (client credentials; without a secret, the customer commands sign in through
the browser with PKCE on ``http://127.0.0.1:$DATASPACE_REDIRECT_PORT/callback``, default port 8765).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer

from clients.sdk import (
    AuthorizationCode,
    ClientCredentials,
    ComplianceClient,
    Credentials,
    CustomerClient,
    DataspaceClientError,
    PartnerClient,
)
from dataspace.cli import app, console, err

remote = typer.Typer(no_args_is_help=True, help="Talk to a running Dataspace server (DATASPACE_URL).")
jobs_app = typer.Typer(no_args_is_help=True, help="Partner jobs.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail, exported with its signed checkpoint.")
rewards_app = typer.Typer(no_args_is_help=True, help="Points and rewards (customer).")
remote.add_typer(jobs_app, name="jobs")
remote.add_typer(audit_app, name="audit")
remote.add_typer(rewards_app, name="rewards")
app.add_typer(remote, name="remote")

F = TypeVar("F", bound=Callable[..., Any])


def _base_url() -> str:
    return os.environ.get("DATASPACE_URL", "http://127.0.0.1:8000")


def _credentials(*, browser_ok: bool, scope: str | None = None) -> Credentials:
    """``scope``: what the command needs (least privilege; a browser sign-in asks the person for exactly that)."""
    client_id = os.environ.get("DATASPACE_CLIENT_ID")
    secret = os.environ.get("DATASPACE_CLIENT_SECRET")
    if client_id and secret:
        return ClientCredentials(client_id, secret, scope=scope)
    if client_id and browser_ok:
        port = int(os.environ.get("DATASPACE_REDIRECT_PORT", "8765"))
        return AuthorizationCode(client_id, port=port, scope=scope)
    raise typer.BadParameter("set DATASPACE_CLIENT_ID and DATASPACE_CLIENT_SECRET")


def sdk_errors(fn: F) -> F:
    """SDK errors print one line (with the server's request id) and exit 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DataspaceClientError as exc:
            rid = getattr(exc, "request_id", None)
            err.print(
                f"[red]error:[/red] {exc}" + (f" (request {rid})" if rid else ""), highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@jobs_app.command("submit")
@sdk_errors
def jobs_submit(
    model: Path | None = typer.Option(None, "--model", exists=True, dir_okay=False, help="ONNX model to upload."),
    contract: int | None = typer.Option(None, "--contract", help="Contract the model is for (with --model)."),
    model_id: int | None = typer.Option(None, "--model-id", help="An already uploaded model."),
    follow: bool = typer.Option(False, "--follow", help="Wait for the job and show its progress."),
    timeout: float = typer.Option(600.0, help="Seconds to wait with --follow."),
) -> None:
    """Upload a model (or name one) and submit a job; with --follow, wait and print the DP aggregates."""
    if (model is None) == (model_id is None):
        raise typer.BadParameter("give either --model FILE --contract ID, or --model-id ID")
    if model is not None and contract is None:
        raise typer.BadParameter("--model needs --contract")
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        if model is not None:
            uploaded = client.upload_model(contract_id=contract or 0, model=model)
            model_id = int(uploaded["id"])
            console.print(f"model {model_id} uploaded ({uploaded.get('status', '')})", highlight=False)
        job = client.submit_job(model_id=int(model_id or 0))
        console.print(f"job {job['id']} {job['status']}", highlight=False)
        if not follow:
            return
        with Progress(
            SpinnerColumn(),
            TextColumn("job {task.fields[job]}: {task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(job["status"], job=job["id"])
            final = client.wait_for_job(
                job["id"], timeout=timeout, on_update=lambda j: progress.update(task, description=str(j["status"]))
            )
        console.print(
            f"job {final['id']} {final['status']}" + (f": {final['error']}" if final.get("error") else ""),
            highlight=False,
        )
        if final["status"] != "succeeded":
            raise typer.Exit(1)
        release = client.job_results(final["id"])
        console.print_json(data=release)


@audit_app.command("export")
@sdk_errors
def audit_export(
    out: Path = typer.Option(..., "--out", dir_okay=False, help="File to write (JSONL)."),
    log: str = typer.Option("audit", help="audit or usage"),
    verify: bool = typer.Option(True, help="Verify the export against the server's signed checkpoint."),
) -> None:
    """Download a signed export of a log, then verify it offline with the checkpoint's verifier keys."""
    from clients.sdk import LogInconsistent
    from clients.sdk._checkpoints import default_state_dir, memory_from_env

    memory = memory_from_env()  # the last checkpoint this machine verified, per log
    with ComplianceClient(_base_url(), _credentials(browser_ok=True, scope="audit")) as client:
        client.checkpoints = memory
        try:
            checkpoint = client.checkpoint(log=log)
        except LogInconsistent as exc:
            evidence = exc.write_evidence(default_state_dir() / "evidence")
            err.print(f"[red]error:[/red] {exc}; both signed checkpoints: {evidence}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        size = client.export(out, log=log)
    console.print(
        f"{out}: {size:,} bytes; checkpoint size {checkpoint['size']}, root {checkpoint['root_hash']}", highlight=False
    )
    if not verify:
        return
    from dataspace.tlog.export import verify_export

    report = verify_export(out, checkpoint["verifier_keys"], policy=memory.policy)
    (console if report.ok else err).print(report.summary(), highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@rewards_app.command("list")
@sdk_errors
def rewards_list() -> None:
    """The rewards catalog and my balance."""
    with CustomerClient(_base_url(), _credentials(browser_ok=True, scope="points")) as client:
        balance = client.points()["balance"]
        console.print(f"balance: {balance:,} points", highlight=False)
        for reward in client.rewards():
            console.print(f"  {reward['key']:<20} {reward['cost']:>8,}  {reward['name']}", highlight=False)


@rewards_app.command("redeem")
@sdk_errors
def rewards_redeem(
    key: str = typer.Argument(..., help="Reward key."),
    quantity: int = typer.Option(1, min=1, max=100),
    idempotency_key: str | None = typer.Option(None, help="Reuse to retry safely (default: a new one)."),
) -> None:
    """Redeem a reward (idempotent: the same --idempotency-key never charges twice). Redeeming needs the
    ``redeem`` scope and a recent sign-in: the browser asks for the password when the last one is too old."""
    with CustomerClient(_base_url(), _credentials(browser_ok=True, scope="points redeem")) as client:
        result = client.redeem(key, quantity=quantity, idempotency_key=idempotency_key or uuid.uuid4().hex)
    console.print(
        f"redeemed {result['quantity']} x {result['reward_name']} for {result['cost']:,} points; "
        f"balance {result['balance_after']:,}",
        highlight=False,
    )


@remote.command("link")
@sdk_errors
def link(
    contract: int = typer.Option(..., "--contract", help="The approved contract the columns are for."),
    records: Path = typer.Option(..., "--records", exists=True, dir_okay=False, help="CSV of my records."),
    id_column: str = typer.Option(..., "--id-column", help="The CSV column holding the identifier."),
    kind: str = typer.Option(..., "--kind", help="email, phone or national_id."),
    columns: Path = typer.Option(..., "--columns", exists=True, dir_okay=False, help="JSON: the declared columns."),
    country_code: str | None = typer.Option(None, "--country-code", help="For national phone numbers, e.g. 86."),
) -> None:
    """Partner: link my records with the operator's consenting customers by private set intersection.
    Identifiers are hashed and blinded here and never sent; the columns are sealed for the server's sandbox."""
    import json

    from clients.sdk._linkage import read_records

    declared = json.loads(columns.read_text(encoding="utf-8"))
    rows = read_records(records, id_column=id_column, columns=declared)
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        run = client.link(
            contract_id=contract, kind=kind, columns=declared, records=rows, default_country_code=country_code
        )
    console.print(
        f"linkage run {run['id']} {run['status']}: about {run['noisy_matched']} matches (DP count), "
        f"{run['skipped']} records skipped",
        highlight=False,
    )
