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
contracts_app = typer.Typer(no_args_is_help=True, help="Partner data contracts: the catalog, proposals.")
models_app = typer.Typer(no_args_is_help=True, help="Partner models (ONNX; Python where the contract allows).")
remote.add_typer(contracts_app, name="contracts")
remote.add_typer(models_app, name="models")
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


def _cost_line(cost: dict[str, Any]) -> str:
    left = "no budget set for it yet" if cost["remaining"] is None else f"{cost['remaining']:g} left"
    return (
        f"this job spends epsilon {cost['epsilon']:g} of your '{cost['purpose']}' privacy budget ({left}), "
        "paid at submission whatever the outcome (refunded only if you cancel before the outcome shows)"
    )


@jobs_app.command("submit")
@sdk_errors
def jobs_submit(
    *,
    model: Path | None = typer.Option(None, "--model", exists=True, dir_okay=False, help="ONNX model to upload."),
    contract: int | None = typer.Option(None, "--contract", help="Contract the model is for (with --model)."),
    model_id: int | None = typer.Option(None, "--model-id", help="An already uploaded model."),
    follow: bool = typer.Option(
        False, "--follow", help="Then wait for the outcome and print the DP aggregates (following spends nothing more)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Spend the budget without asking."),
    timeout: float = typer.Option(600.0, help="Seconds to wait with --follow."),
) -> None:
    """Upload a model (or name one) and submit a job. Submitting SPENDS privacy budget (the contract's
    epsilon per release): the cost and the budget left are shown first and must be confirmed (or --yes).
    With --follow, wait and print the DP aggregates: reading them is free, the job already paid."""
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
        cost = client.submission_cost(model_id=int(model_id or 0))
        console.print(_cost_line(cost), highlight=False, soft_wrap=True)
        if not yes and not typer.confirm("submit the job and spend it?", default=False):
            err.print("not submitted: no budget spent", highlight=False)
            raise typer.Exit(1)
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
        _print_outcome(client, final)


def _print_outcome(client: PartnerClient, final: dict[str, Any]) -> None:
    console.print(
        f"job {final['id']} {final['status']}" + (f": {final['error']}" if final.get("error") else ""),
        highlight=False,
    )
    if final["status"] != "succeeded":
        raise typer.Exit(1)
    _print_release(client.job_results(final["id"]))


def _print_release(release: dict[str, Any]) -> None:
    """The DP aggregate in words: each noisy number with its 95% noise interval; suppressed groups named."""
    result, noise = release.get("result", {}), release.get("noise", {})
    console.print(
        f"job {release['job_id']}: epsilon {release['epsilon']:g} ({release['mechanism']}); "
        f"numbers are noisy, +/- shows each one's 95% noise interval",
        highlight=False,
    )
    width = noise.get("count")
    pm = f" +/- {width:.1f}" if width else ""
    if result.get("kind") == "label_counts":
        for label, n in (result.get("counts") or {}).items():
            shown = "suppressed (fewer than k_min)" if n is None else f"{n}{pm}"
            console.print(f"  {label:<24} {shown}", highlight=False)
    elif result.get("suppressed"):
        console.print("  suppressed: fewer than k_min decisions", highlight=False)
    else:
        mean_pm = f" +/- {noise['mean']:.3g}" if noise.get("mean") is not None else ""
        console.print(f"  count {result.get('count')}{pm}; mean {result.get('mean'):.4g}{mean_pm}", highlight=False)


@jobs_app.command("list")
@sdk_errors
def jobs_list() -> None:
    """My jobs: status (queued until the outcome shows on the server's schedule) and reason code."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        for j in client.jobs():
            error = f"  {j['error']}" if j.get("error") else ""
            console.print(
                f"{j['id']:>6}  contract {j['contract_id']:<5} model {j['model_id']:<5} {j['status']:<10}{error}",
                highlight=False,
            )


@jobs_app.command("status")
@sdk_errors
def jobs_status(
    job_id: int = typer.Argument(...),
    follow: bool = typer.Option(False, "--follow", help="Wait for the outcome (spends no budget: paid at submission)."),
    timeout: float = typer.Option(600.0, help="Seconds to wait with --follow."),
) -> None:
    """A job's status; with --follow, wait for its outcome and print its DP aggregates (free to read)."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        job = client.wait_for_job(job_id, timeout=timeout) if follow else client.job(job_id)
        if follow:
            _print_outcome(client, job)
            return
        console.print(
            f"job {job['id']} {job['status']}" + (f": {job['error']}" if job.get("error") else ""), highlight=False
        )


@jobs_app.command("results")
@sdk_errors
def jobs_results(job_id: int = typer.Argument(...)) -> None:
    """The DP aggregates of a succeeded job (paid at submission; asking again returns the same numbers)."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        _print_release(client.job_results(job_id))


@remote.command("budget")
@sdk_errors
def budget() -> None:
    """My privacy budget per purpose: epsilon total, spent and left."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        for b in client.budget():
            console.print(
                f"{b['purpose']:<24} {b['epsilon_remaining']:g} of {b['epsilon_total']:g} left "
                f"({b['epsilon_spent']:g} spent)",
                highlight=False,
            )


@contracts_app.command("fields")
@sdk_errors
def contracts_fields(lang: str = typer.Option("en", help="en or zh-CN")) -> None:
    """The catalog fields a contract may use: the transforms each allows and its promise in words."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        for f in client.fields():
            allowed = ", ".join(
                name + (f" {limits}" if limits else "") for name, limits in (f.get("transforms") or {}).items()
            )
            console.print(f"{f['key']} ({f['data_type']}): {allowed or 'not shared'}", highlight=False)
            promise = (f.get("shared_as") or {}).get(lang)
            if promise:
                console.print(f"    {promise}", highlight=False, soft_wrap=True)


@contracts_app.command("list")
@sdk_errors
def contracts_list() -> None:
    """My contracts with their status, k and epsilon per job."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        for c in client.contracts():
            fields = ", ".join(f"{f.get('field')}:{f.get('transform')}" for f in c.get("features", []))
            console.print(
                f"{c['id']:>5}  {c['status']:<9} {c['purpose']:<20} k={c['k_min']} "
                f"epsilon/job={c['epsilon_per_release']:g}  {fields}",
                highlight=False,
                soft_wrap=True,
            )


@contracts_app.command("propose")
@sdk_errors
def contracts_propose(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The proposal as JSON (the API's body)."),
) -> None:
    """Propose a contract (stewards approve it; proposing spends nothing). k_min: the smallest group a
    result may describe; epsilon_per_release: the privacy budget each job spends (smaller = more noise)."""
    import json

    try:
        body = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{file}: not JSON ({exc})") from None
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        c = client.propose_contract(body)
    console.print(
        f"contract {c['id']} {c['status']}: needs {c['required_approvals']} steward approval(s)", highlight=False
    )


@models_app.command("upload")
@sdk_errors
def models_upload(
    file: Path = typer.Argument(..., exists=True, dir_okay=False),
    contract: int = typer.Option(..., "--contract", help="The contract the model is for."),
    kind: str = typer.Option("onnx", "--kind", help="onnx, or python where the contract allows it."),
) -> None:
    """Upload a model and show its signature check (inputs and outputs against the contract)."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        m = client.upload_model(contract_id=contract, model=file, kind=kind)
    console.print(f"model {m['id']} {m['status']} (sha256 {m['sha256'][:16]}...)", highlight=False)
    for key, value in (m.get("signature") or {}).items():
        console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)


@models_app.command("list")
@sdk_errors
def models_list() -> None:
    """My models and their status."""
    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        for m in client.models():
            console.print(
                f"{m['id']:>5}  contract {m['contract_id']:<5} {m['kind']:<7} {m['status']:<10} {m['sha256'][:16]}",
                highlight=False,
            )


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


RECORD_COLUMNS = (
    "purpose",
    "purpose_label",
    "description",
    "legal_basis",
    "data_categories",
    "fields",
    "special_categories",
    "recipients",
    "recipient_categories",
    "retention",
    "international_transfers",
    "safeguards",
)


@audit_app.command("records")
@sdk_errors
def audit_records(
    csv_out: Path | None = typer.Option(None, "--csv", dir_okay=False, help="Write the records as CSV here."),
) -> None:
    """Records of processing (GDPR art. 30): the controller and DPO, then one record per purpose."""
    import csv

    with ComplianceClient(_base_url(), _credentials(browser_ok=True, scope="audit")) as client:
        body = client.processing_records()
    controller = body.get("controller") or {}
    console.print(f"controller: {controller.get('name', '')}; DPO: {controller.get('dpo', '')}", highlight=False)

    def flat(value: Any) -> str:
        if isinstance(value, list):
            return "; ".join(
                str(v.get("label") or v.get("key") or "") if isinstance(v, dict) else str(v) for v in value
            )
        return "" if value is None else str(value)

    rows = [{c: flat(r.get(c)) for c in RECORD_COLUMNS} for r in body.get("records", [])]
    if csv_out is None:
        for r in rows:
            console.print(f"{r['purpose']}: {r['legal_basis']}; {r['fields'] or '-'}; {r['recipients'] or '-'}")
        return
    with csv_out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["controller", "controller_contact", "dpo", *RECORD_COLUMNS])
        for r in rows:
            writer.writerow(
                [controller.get("name", ""), controller.get("email", ""), controller.get("dpo", "")]
                + [r[c] for c in RECORD_COLUMNS]
            )
    console.print(f"{csv_out}: {len(rows)} records", highlight=False)


@audit_app.command("requests")
@sdk_errors
def audit_requests(kind: str | None = typer.Option(None, help="access or erasure")) -> None:
    """Access and erasure requests: who asked, when, when completed, the outcome."""
    with ComplianceClient(_base_url(), _credentials(browser_ok=True, scope="audit")) as client:
        for r in client.requests_log(kind=kind):
            done = r.get("completed_at") or "open"
            console.print(
                f"{r['id']:>6}  {r['kind']:<8} subject {r['subject_id']:<8} {r['requested_at']}  done {done}",
                highlight=False,
            )


@audit_app.command("actions")
@sdk_errors
def audit_actions(log: str = typer.Option("audit", help="audit or usage")) -> None:
    """The actions recorded in a log (the values the console's and the API's action filter accept)."""
    with ComplianceClient(_base_url(), _credentials(browser_ok=True, scope="audit")) as client:
        for action in client.audit_actions(log=log):
            console.print(action, highlight=False)


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
    contract: int = typer.Option(..., "--contract", help="The approved contract that declared the columns."),
    records: Path = typer.Option(..., "--records", exists=True, dir_okay=False, help="CSV of my records."),
    id_column: str = typer.Option(..., "--id-column", help="The CSV column holding the identifier."),
    country_code: str | None = typer.Option(None, "--country-code", help="For national phone numbers, e.g. 86."),
) -> None:
    """Partner: link my records with the operator's consenting customers by private set intersection.
    Identifiers are hashed and blinded here and never sent; the columns are sealed for the server's sandbox."""
    from clients.sdk._linkage import read_records

    with PartnerClient(_base_url(), _credentials(browser_ok=False)) as client:
        declared = client.declared_columns(contract)
        rows = read_records(records, id_column=id_column, columns=declared["columns"])
        run = client.link(contract_id=contract, records=rows, default_country_code=country_code)
    console.print(
        f"linkage run {run['id']} {run['status']}: about {run['noisy_matched']} matches (DP count), "
        f"{run['skipped']} records skipped",
        highlight=False,
    )
