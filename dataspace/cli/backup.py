"""``dataspace backup DIR`` and ``dataspace restore DIR``: the database backup drill."""

from __future__ import annotations

from pathlib import Path

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

app = typer.Typer()


@app.command()
@one_line_errors
def backup(dest: Path = typer.Argument(..., help="A new directory for the backup (manifest + database copy).")) -> None:
    """Back up the database (pg_dump / SQLite online backup) with the logs' signed checkpoints.

    Keys are NOT in the backup: keep the key file and the epoch key store apart (see README, Operations)."""
    from dataspace.backup import service
    from dataspace.context import Context

    ctx = Context.open(Settings())
    try:
        manifest = service.backup(ctx.settings, ctx.db, ctx.keys, dest)
    finally:
        ctx.close()
    console.print(f"backup:  {dest} ({manifest.backend}, {manifest.bytes} bytes, sha256 {manifest.sha256[:16]}...)")
    for name, note in manifest.checkpoints.items():
        size = note.split("\n")[1] if note else "0"
        console.print(f"{name + ':':8} {size} entries at the last checkpoint")


@app.command()
@one_line_errors
def restore(
    src: Path = typer.Argument(..., help="A directory written by `dataspace backup`."),
    accept_log_rollback: bool = typer.Option(
        False, "--accept-log-rollback", help="Restore even though log entries published after the backup are lost."
    ),
) -> None:
    """Restore a backup into the configured, empty database; refuse logs that do not extend the published
    checkpoints, then reconcile the epoch keys (erasures made after the backup stay in force)."""
    from dataspace.backup import service
    from dataspace.context import Context

    ctx = Context.open(Settings())
    try:
        report = service.restore(
            ctx.settings, ctx.db, ctx.keys, ctx.vault, src, accept_log_rollback=accept_log_rollback
        )
    finally:
        ctx.close()
    console.print(f"restored: {src} (taken {report.manifest.created_at})")
    for c in report.logs:
        lost = f", {c.lost} published entries rolled back (recorded)" if c.lost else ""
        console.print(f"{c.log + ':':9} {c.size} entries, consistent with the published checkpoints{lost}")
    console.print(
        f"keys:     {report.reconciled['rewrapped']} data keys re-wrapped from the journal, "
        f"{report.reconciled['shredded']} subjects erased since the backup shredded again, "
        f"{report.reconciled.get('partner_runs', 0)} partner contributions shredded since the backup shredded again"
    )
