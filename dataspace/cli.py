"""The ``dataspace`` command line. Errors print one line and exit non-zero; keys are never printed."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from dataspace.errors import DataspaceError
from dataspace.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Dataspace: trusted data space server.")
console = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """Turn domain errors into a one-line message and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DataspaceError as exc:
            err.print(f"[red]error:[/red] {exc.diagnostics()}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


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
        from dataspace.observability.metrics import serve_metrics

        serve_metrics(context, settings.metrics_bind, settings)
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


def register(sub: typer.Typer, name: str) -> None:
    app.add_typer(sub, name=name)


def main() -> None:
    from dataspace import cli_commands  # noqa: F401  (registers the sub-commands)

    app()
    sys.exit(0)
