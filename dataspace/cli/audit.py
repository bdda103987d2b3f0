"""``dataspace audit ...``: export a log and verify an export offline."""

from __future__ import annotations

from pathlib import Path

import typer

from dataspace.cli.common import console, err, one_line_errors
from dataspace.settings import Settings

app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit trail and data-point ledger.")


@app.command("verify")
@one_line_errors
def verify(
    export: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSONL or CSV export."),
    key: list[str] = typer.Option(
        [],
        "--key",
        "-k",
        help="Verifier key (name+hash+base64, as GET /v1/audit/checkpoint shows). Default: this server's keys.",
    ),
    witness_key: list[str] = typer.Option(
        [], "--witness-key", help="A trusted witness's cosigner key. Default: DATASPACE_WITNESS_KEYS."
    ),
    quorum: int | None = typer.Option(
        None,
        "--quorum",
        min=0,
        help="Cosignatures required (0: the operator's signature alone). Default: DATASPACE_WITNESS_QUORUM.",
    ),
    remembered: list[Path] = typer.Option(
        [], "--remembered", exists=True, dir_okay=False, help="A signed checkpoint seen earlier; it must be a prefix."
    ),
) -> None:
    """Recompute the Merkle tree of EXPORT and check its signed checkpoint, offline.

    Exit code 0 when intact; 1 with the first bad entry when tampered, when the witness quorum is not met,
    or when a remembered checkpoint is not a prefix of the exported log (a fork or a rollback).
    """
    from dataspace.tlog.cosigning import policy_from_settings
    from transparency.cosign import WitnessPolicy
    from transparency.export import verify_export
    from transparency.note import CheckpointError

    configured = policy_from_settings(Settings())
    witnesses = [w.vkey for w in configured.witnesses] if not witness_key else list(witness_key)
    try:
        policy = WitnessPolicy.from_strings(witnesses, configured.quorum if quorum is None else quorum)
    except (ValueError, CheckpointError):
        err.print(
            "error: a witness key is not valid, or the quorum exceeds the number of witness keys", highlight=False
        )
        raise typer.Exit(2) from None
    notes = [p.read_text(encoding="utf-8") for p in remembered]
    keys = list(key)
    if not keys:
        from dataspace.context import Context
        from dataspace.tlog.log import verifier_keys

        ctx = Context.open(Settings())
        try:
            keys = verifier_keys(ctx.settings, ctx.keys)
        finally:
            ctx.close()
    report = verify_export(export, keys, policy=policy, remembered=notes)
    if report.ok:
        console.print(report.summary(), highlight=False, soft_wrap=True)
        return
    err.print(report.summary(), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command("export")
@one_line_errors
def export_cmd(
    output: Path = typer.Argument(..., dir_okay=False, help="File to write."),
    log: str = typer.Option("audit", help="audit or usage"),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv"),
) -> None:
    """Sequence pending entries and write a signed export of a log (local administration)."""
    from dataspace.context import Context
    from dataspace.errors import NotFound
    from dataspace.tlog.export import write_export
    from dataspace.tlog.log import latest_checkpoint, sequence

    ctx = Context.open(Settings())
    try:
        sequence(ctx.settings, ctx.db, ctx.keys, log)
        with ctx.db.session() as session:
            cp = latest_checkpoint(session, log=log)
            if cp is None:
                raise NotFound(f"the {log} log is empty")
            write_export(session, output, cp=cp, fmt=fmt)
    finally:
        ctx.close()
    console.print(f"{output}: {cp.size} entries, root {cp.root_hash.hex()}")
