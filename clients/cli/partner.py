"""``dataspace remote contracts|models|jobs|budget|link``: a partner's work against a running server."""

from __future__ import annotations

from pathlib import Path

import typer

from clients.cli._common import base_url, console, credentials, err, sdk_errors
from clients.sdk import PartnerClient
from clients.sdk.models import Job, Release, SubmissionCost

commands = typer.Typer()  # budget, link: directly under ``remote``
contracts_app = typer.Typer(no_args_is_help=True, help="Partner data contracts: the catalog, proposals.")
models_app = typer.Typer(no_args_is_help=True, help="Partner models (ONNX; Python where the contract allows).")
jobs_app = typer.Typer(no_args_is_help=True, help="Partner jobs.")


def _cost_line(cost: SubmissionCost) -> str:
    left = "no budget set for it yet" if cost.remaining is None else f"{cost.remaining:g} left"
    return (
        f"this job spends epsilon {cost.epsilon:g} of your '{cost.purpose}' privacy budget ({left}), "
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

    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        if model is not None:
            uploaded = client.upload_model(contract_id=contract or 0, model=model)
            model_id = int(uploaded.id)
            console.print(f"model {model_id} uploaded ({uploaded.status})", highlight=False)
        cost = client.submission_cost(model_id=int(model_id or 0))
        console.print(_cost_line(cost), highlight=False, soft_wrap=True)
        if not yes and not typer.confirm("submit the job and spend it?", default=False):
            err.print("not submitted: no budget spent", highlight=False)
            raise typer.Exit(1)
        job = client.submit_job(model_id=int(model_id or 0))
        console.print(f"job {job.id} {job.status}", highlight=False)
        if not follow:
            return
        with Progress(
            SpinnerColumn(),
            TextColumn("job {task.fields[job]}: {task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(job.status, job=job.id)
            final = client.wait_for_job(
                job.id, timeout=timeout, on_update=lambda j: progress.update(task, description=str(j.status))
            )
        _print_outcome(client, final)


def _print_outcome(client: PartnerClient, final: Job) -> None:
    console.print(
        f"job {final.id} {final.status}" + (f": {final.error}" if final.error else ""),
        highlight=False,
    )
    if final.status != "succeeded":
        raise typer.Exit(1)
    _print_release(client.job_results(final.id))


def _print_release(release: Release) -> None:
    """The DP aggregate in words: each noisy number with its 95% noise interval; suppressed groups named."""
    result, noise = release.result, release.noise
    console.print(
        f"job {release.job_id}: epsilon {release.epsilon:g} ({release.mechanism}); "
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
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        for j in client.jobs():
            error = f"  {j.error}" if j.error else ""
            console.print(
                f"{j.id:>6}  contract {j.contract_id:<5} model {j.model_id:<5} {j.status:<10}{error}",
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
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        job = client.wait_for_job(job_id, timeout=timeout) if follow else client.job(job_id)
        if follow:
            _print_outcome(client, job)
            return
        console.print(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""), highlight=False)


@jobs_app.command("results")
@sdk_errors
def jobs_results(job_id: int = typer.Argument(...)) -> None:
    """The DP aggregates of a succeeded job (paid at submission; asking again returns the same numbers)."""
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        _print_release(client.job_results(job_id))


@commands.command("budget")
@sdk_errors
def budget() -> None:
    """My privacy budget per purpose: epsilon total, spent and left."""
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        for b in client.budget():
            console.print(
                f"{b.purpose:<24} {b.epsilon_remaining:g} of {b.epsilon_total:g} left ({b.epsilon_spent:g} spent)",
                highlight=False,
            )


@contracts_app.command("fields")
@sdk_errors
def contracts_fields(lang: str = typer.Option("en", help="en or zh-CN")) -> None:
    """The catalog fields a contract may use: the transforms each allows and its promise in words."""
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        for f in client.fields():
            allowed = ", ".join(name + (f" {limits}" if limits else "") for name, limits in f.transforms.items())
            console.print(f"{f.key} ({f.data_type}): {allowed or 'not shared'}", highlight=False)
            promise = f.shared_as.get(lang)
            if promise:
                console.print(f"    {promise}", highlight=False, soft_wrap=True)


@contracts_app.command("list")
@sdk_errors
def contracts_list() -> None:
    """My contracts with their status, k and epsilon per job."""
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        for c in client.contracts():
            fields = ", ".join(f"{f.get('field')}:{f.get('transform')}" for f in c.features)
            console.print(
                f"{c.id:>5}  {c.status:<9} {c.purpose:<20} k={c.k_min} epsilon/job={c.epsilon_per_release:g}  {fields}",
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
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        c = client.propose_contract(body)
    console.print(f"contract {c.id} {c.status}: needs {c.required_approvals} steward approval(s)", highlight=False)


@models_app.command("upload")
@sdk_errors
def models_upload(
    file: Path = typer.Argument(..., exists=True, dir_okay=False),
    contract: int = typer.Option(..., "--contract", help="The contract the model is for."),
    kind: str = typer.Option("onnx", "--kind", help="onnx, or python where the contract allows it."),
) -> None:
    """Upload a model and show its signature check (inputs and outputs against the contract)."""
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        m = client.upload_model(contract_id=contract, model=file, kind=kind)
    console.print(f"model {m.id} {m.status} (sha256 {m.sha256[:16]}...)", highlight=False)
    for key, value in (m.signature or {}).items():
        console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)


@models_app.command("list")
@sdk_errors
def models_list() -> None:
    """My models and their status."""
    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        for m in client.models():
            console.print(
                f"{m.id:>5}  contract {m.contract_id:<5} {m.kind:<7} {m.status:<10} {m.sha256[:16]}",
                highlight=False,
            )


@commands.command("link")
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

    with PartnerClient(base_url(), credentials(browser_ok=False)) as client:
        declared = client.declared_columns(contract)
        rows = read_records(records, id_column=id_column, columns=declared.columns)
        run = client.link(contract_id=contract, records=rows, default_country_code=country_code)
    console.print(
        f"linkage run {run.id} {run.status}: about {run.noisy_matched} matches (DP count), "
        f"{run.skipped} records skipped",
        highlight=False,
    )
