"""``dataspace clients create``: register an OAuth client; its secret is printed once and stored only as a hash."""

from __future__ import annotations

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

app = typer.Typer(no_args_is_help=True, help="OAuth clients.")


@app.command("create")
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
