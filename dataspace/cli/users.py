"""``dataspace users create``: user accounts for the browser sign-in; a generated password is printed once."""

from __future__ import annotations

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

app = typer.Typer(no_args_is_help=True, help="User accounts (browser sign-in).")


@app.command("create")
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
