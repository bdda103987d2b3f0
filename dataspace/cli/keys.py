"""``dataspace keys rotate|retire-epochs|reconcile``: key material (only key ids are ever printed)."""

from __future__ import annotations

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Key material.")


@app.command("rotate")
@one_line_errors
def rotate() -> None:
    """New signing and token keys become active; old keys stay for verification (tokens stay valid)."""
    from dataspace.keys import load_key_file, save_key_file

    settings = Settings()
    path = settings.resolved_key_file
    ring = load_key_file(path)
    hsm = None
    if settings.key_backend == "pkcs11":  # the new signing key is generated inside the HSM
        from dataspace.pkcs11 import configured_token

        hsm = configured_token()
    ring.rotate(hsm)
    save_key_file(path, ring)
    console.print(f"active token key:   {ring.token_key.kid} ({len(ring.token_keys)} kept for verification)")
    console.print(f"active signing key: {ring.signing_key.kid} ({len(ring.signing_keys)} kept)")
    console.print("running servers on this key file switch to the new keys within 5 seconds")


@app.command("retire-epochs")
@one_line_errors
def retire_epochs(
    every_bucket: bool = typer.Option(False, "--all", help="Retire every bucket (a full rotation of wrapping keys)."),
) -> None:
    """Retire now the epoch keys of erased subjects' buckets (servers do it every DATASPACE_EPOCH_RETIRE_SECONDS):
    afterwards no earlier database backup can open an erased subject."""
    from dataspace.context import Context
    from dataspace.subjects.epochs import retire

    ctx = Context.open()
    try:
        report = retire(ctx.db, ctx.vault, every_bucket=every_bucket)
    finally:
        ctx.close()
    console.print(
        f"buckets retired: {report.buckets}; data keys re-wrapped: {report.rewrapped}; "
        f"epoch keys destroyed: {report.keys_destroyed}"
    )


@app.command("reconcile")
@one_line_errors
def reconcile_epochs() -> None:
    """After restoring a database backup: re-wrap data keys whose epoch key was retired since the backup
    (from the re-wrap journal), shred the subjects erased since then, and the partner contributions (linkage
    runs) shredded since then (their keys are gone)."""
    from dataspace.context import Context
    from dataspace.linkage import service as linkage
    from dataspace.linkage.keys import PartnerKeys
    from dataspace.subjects.epochs import reconcile

    ctx = Context.open()
    try:
        report = reconcile(ctx.db, ctx.vault)
        with ctx.db.transaction() as session:
            runs = linkage.reconcile(session, PartnerKeys.of(ctx.vault))
    finally:
        ctx.close()
    console.print(
        f"data keys re-wrapped: {report.rewrapped}; subjects erased since the backup: {len(report.shredded)}; "
        f"partner contributions shredded since the backup: {len(runs)}"
    )
