"""``dataspace init`` and ``dataspace serve``: create the database and keys, run the HTTP server."""

from __future__ import annotations

import gc

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

app = typer.Typer()


@app.command()
@one_line_errors
def init() -> None:
    """Create or upgrade the database schema and generate key material (never overwritten)."""
    from dataspace.bootstrap import init as do_init

    result = do_init(Settings())
    console.print(f"database: {result.database_url}")
    console.print(f"keys:     {result.key_file} ({'created' if result.keys_created else 'kept existing'})")
    console.print(f"sandbox:  {result.sandbox_user}")


@app.command()
@one_line_errors
def serve() -> None:
    """Run the HTTP server on the configured bind address."""
    import uvicorn

    from dataspace.app import create_app
    from dataspace.context import Context
    from dataspace.logging import configure

    settings = Settings()
    configure(settings.log_level)
    host, _, port = settings.bind.rpartition(":")
    context = Context.open(settings)
    application = create_app(context, background=True)
    if settings.metrics_bind:  # a separate address the operator firewalls; never on the API's bind
        from dataspace.http.metrics import serve_metrics

        serve_metrics(context.db, settings.metrics_bind, settings, queued=context.writes_queued)
    # Everything loaded so far lives as long as the process: keep it out of the cyclic collector's scans,
    # and let the youngest generation grow larger before a collection (requests allocate many short-lived
    # objects; the default threshold of 700 collected every few requests).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    uvicorn.run(
        application,
        host=host or "127.0.0.1",
        port=int(port),
        log_level="warning",
    )
