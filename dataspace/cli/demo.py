"""``dataspace demo``: initialise, build the demo data, print the accounts, serve."""

from __future__ import annotations

import os

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

app = typer.Typer()


@app.command("demo")
@one_line_errors
def demo(
    customers: int = typer.Option(10_000, min=10, max=2_000_000, help="Synthetic customers to generate."),
    serve: bool = typer.Option(True, help="Start the server afterwards."),
    witnesses: int = typer.Option(2, min=0, max=5, help="Independent witness processes to start with the server."),
) -> None:
    """Build a ready-to-click demo on the configured database (embedded SQLite by default) and serve it."""
    from dataspace.auth.web_clients import ensure_web_clients
    from dataspace.bootstrap import init
    from dataspace.compliance.controller import DEMO_ENV, ENV_PREFIX
    from dataspace.context import Context
    from dataspace.demo.build import build_demo
    from dataspace.demo.credentials import write_credentials

    # The demo names its own, visibly fictitious controller unless the operator configured one; set in the
    # environment so that the server started below reads it too.
    if not any(k.startswith(ENV_PREFIX) for k in os.environ):
        os.environ.update(DEMO_ENV)
    settings = Settings()
    init(settings)
    ctx = Context.open(settings)
    try:
        accounts = build_demo(ctx, customers=customers, progress=lambda m: console.print(f"[cyan]demo[/cyan] {m}"))
        # A data dir built by an older version gets the newer sign-in clients too.
        ensure_web_clients(ctx.settings, ctx.db)
        credentials = write_credentials(ctx, accounts)
    finally:
        ctx.close()
    base = settings.resolved_issuer
    console.print("[bold]Demo accounts[/bold] (generated for this data directory; shown on every `dataspace demo`):")
    for name, info in accounts.users.items():
        extra = f"  (customer {info['customer_id']})" if "customer_id" in info else ""
        console.print(f"  {info['role']:<10} user {name:<10} password {info['password']}{extra}", highlight=False)
    for client_id, info in accounts.clients.items():
        console.print(
            f"  {info['role']:<10} client_id {client_id}  client_secret {info['secret']}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"Start here:         {base}/\nCustomer portal:    {base}/portal/\nPartner view:       {base}/partner/\n"
        f"Steward console:    {base}/steward/\nCompliance console: {base}/console/\nAPI docs:           {base}/docs"
    )
    console.print(
        f"[bold]Every role's credentials[/bold] (browser, CLI and SDK; mode 0600): {credentials}",
        highlight=False,
        soft_wrap=True,
    )
    if serve:
        from dataspace.cli.server import serve as run_server

        if witnesses and not settings.witness_urls:
            from dataspace.demo.witnesses import configure, start_witnesses

            ctx = Context.open(settings)
            try:
                env = start_witnesses(ctx, witnesses)
            finally:
                ctx.close()
            configure(env)  # read by the server's Settings below
            for url, key in zip(
                env["DATASPACE_WITNESS_URLS"].split(","), env["DATASPACE_WITNESS_KEYS"].split(","), strict=True
            ):
                console.print(f"Witness:            {url}  {key}", highlight=False, soft_wrap=True)
        run_server()
