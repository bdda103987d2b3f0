"""``dataspace keys rotate|retire-epochs|reconcile``, ``dataspace clients create``, ``dataspace users create``.

Secrets (client secrets, generated passwords) are printed once and stored only as hashes; key material is
never printed (only key ids).
"""

from __future__ import annotations

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

keys_app = typer.Typer(no_args_is_help=True, help="Key material.")
clients_app = typer.Typer(no_args_is_help=True, help="OAuth clients.")
users_app = typer.Typer(no_args_is_help=True, help="User accounts (browser sign-in).")


@keys_app.command("rotate")
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


@keys_app.command("retire-epochs")
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


@keys_app.command("reconcile")
@one_line_errors
def reconcile_epochs() -> None:
    """After restoring a database backup: re-wrap data keys whose epoch key was retired since the backup
    (from the re-wrap journal) and shred the subjects erased since then."""
    from dataspace.context import Context
    from dataspace.subjects.epochs import reconcile

    ctx = Context.open()
    try:
        report = reconcile(ctx.db, ctx.vault)
    finally:
        ctx.close()
    console.print(f"data keys re-wrapped: {report.rewrapped}; subjects erased since the backup: {len(report.shredded)}")


@clients_app.command("create")
@one_line_errors
def create_client(  # noqa: PLR0917  (typer maps each option to a parameter)
    role: str = typer.Option(..., help="customer, partner, steward or compliance."),
    name: str = typer.Option("", help="A display name."),
    partner: str | None = typer.Option(None, help="The partner key (partner clients)."),
    grant: list[str] = typer.Option(
        None, "--grant", help="client_credentials (default), or authorization_code + refresh_token."
    ),
    redirect_uri: list[str] = typer.Option(None, "--redirect-uri", help="Exact redirect URI(s)."),
    scope: list[str] = typer.Option(None, "--scope", help="Restrict to these scopes."),
    public: bool = typer.Option(False, help="A browser/native app without a secret (PKCE only)."),
    client_id: str | None = typer.Option(None, help="Choose the client id (default: generated)."),
) -> None:
    """Register an OAuth client; its secret is shown once."""
    from dataspace.auth import service
    from dataspace.context import Context

    ctx = Context.open(Settings())
    try:
        with ctx.db.transaction() as session:
            new = service.create_client(
                session=session,
                role=role,
                name=name,
                partner_id=service.resolve_partner(session, partner),
                grant_types=list(grant or []) or None,
                redirect_uris=list(redirect_uri or []) or None,
                scopes=list(scope or []) or None,
                public=public,
                client_id=client_id,
            )
            cid, scopes = new.client.client_id, new.client.scopes
    finally:
        ctx.close()
    console.print(f"client_id:     {cid}")
    if new.secret is not None:
        console.print(f"client_secret: {new.secret}", highlight=False, soft_wrap=True)
        console.print("store the secret now: it is not shown again")
    console.print(f"scopes:        {' '.join(scopes)}")


@users_app.command("create")
@one_line_errors
def create_user(
    username: str = typer.Argument(..., help="The sign-in name."),
    role: str = typer.Option(..., help="customer, partner, steward or compliance."),
    subject_id: int | None = typer.Option(None, help="The data subject (customer accounts)."),
    partner: str | None = typer.Option(None, help="The partner key (partner accounts)."),
    generate_password: bool = typer.Option(False, help="Generate a password and show it once."),
) -> None:
    """Create a user; the password is prompted for (or generated and shown once) and stored as argon2."""
    from dataspace.auth import service
    from dataspace.auth.passwords import new_secret
    from dataspace.context import Context

    if generate_password:
        password = new_secret()
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    ctx = Context.open(Settings())
    try:
        with ctx.db.transaction() as session:
            service.create_user(
                session=session,
                username=username,
                password=password,
                role=role,
                subject_id=subject_id,
                partner_id=service.resolve_partner(session, partner),
            )
    finally:
        ctx.close()
    console.print(f"user {username} created ({role})")
    if generate_password:
        console.print(f"password: {password}", highlight=False, soft_wrap=True)
        console.print("store the password now: it is not shown again")
