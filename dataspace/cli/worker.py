"""``dataspace worker``: run partner jobs (plan + shards) from the broker, on this or any other machine."""

from __future__ import annotations

import typer

from dataspace.cli.common import console, one_line_errors
from dataspace.errors import InvalidInput
from dataspace.settings import Settings

app = typer.Typer()


@app.command()
@one_line_errors
def worker(
    threads: int = typer.Option(2, min=1, max=64, help="Shards this process runs at once."),
) -> None:
    """Run partner jobs from the broker (DATASPACE_BROKER_URL) until SIGTERM / Ctrl-C.

    Needs the server's database URL and key file (DATASPACE_DATABASE_URL, DATASPACE_KEY_FILE) and
    bubblewrap for the model sandbox. Start as many as you like, on as many machines.
    """
    from dataspace.context import Context
    from dataspace.jobs.queue import serve
    from dataspace.logging import configure

    settings = Settings()
    if not settings.broker_url:
        raise InvalidInput("set DATASPACE_BROKER_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) to run a worker")
    configure(settings.log_level)
    ctx = Context.open(settings)
    if settings.metrics_bind:  # its own address (two processes on one host need two)
        from dataspace.http.metrics import serve_metrics

        serve_metrics(ctx.db, settings.metrics_bind, settings, queued=ctx.writes_queued)
    console.print(f"job worker: queue {settings.broker_queue}, {threads} thread(s)", highlight=False)
    try:
        serve(ctx.jobs, threads=threads)
    finally:
        ctx.close()
