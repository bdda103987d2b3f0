"""``dataspace remote audit ...``: a compliance officer's exports, verified offline, and records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from clients.cli._common import base_url, console, credentials, err, sdk_errors
from clients.sdk import ComplianceClient

app = typer.Typer(no_args_is_help=True, help="The audit trail, exported with its signed checkpoint.")


@app.command("export")
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
    with ComplianceClient(base_url(), credentials(browser_ok=True, scope="audit")) as client:
        client.checkpoints = memory
        try:
            checkpoint = client.checkpoint(log=log)
        except LogInconsistent as exc:
            evidence = exc.write_evidence(default_state_dir() / "evidence")
            err.print(f"[red]error:[/red] {exc}; both signed checkpoints: {evidence}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        size = client.export(out, log=log)
    console.print(
        f"{out}: {size:,} bytes; checkpoint size {checkpoint.size}, root {checkpoint.root_hash}", highlight=False
    )
    if not verify:
        return
    from transparency.export import verify_export

    report = verify_export(out, checkpoint.verifier_keys, policy=memory.policy)
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


@app.command("records")
@sdk_errors
def audit_records(
    csv_out: Path | None = typer.Option(None, "--csv", dir_okay=False, help="Write the records as CSV here."),
) -> None:
    """Records of processing (GDPR art. 30): the controller and DPO, then one record per purpose."""
    import csv

    with ComplianceClient(base_url(), credentials(browser_ok=True, scope="audit")) as client:
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


@app.command("requests")
@sdk_errors
def audit_requests(kind: str | None = typer.Option(None, help="access or erasure")) -> None:
    """Access and erasure requests: who asked, when, when completed, the outcome."""
    with ComplianceClient(base_url(), credentials(browser_ok=True, scope="audit")) as client:
        for r in client.requests_log(kind=kind):
            done = r.completed_at or "open"
            console.print(
                f"{r.id:>6}  {r.kind:<8} subject {r.subject_id:<8} {r.requested_at}  done {done}",
                highlight=False,
            )


@app.command("actions")
@sdk_errors
def audit_actions(log: str = typer.Option("audit", help="audit or usage")) -> None:
    """The actions recorded in a log (the values the console's and the API's action filter accept)."""
    with ComplianceClient(base_url(), credentials(browser_ok=True, scope="audit")) as client:
        for action in client.audit_actions(log=log):
            console.print(action, highlight=False)
