"""What the ``dataspace remote`` commands share: configuration from the environment, one-line SDK errors,
the output consoles."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from clients.sdk import AuthorizationCode, ClientCredentials, Credentials, DataspaceClientError

console = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def base_url() -> str:
    return os.environ.get("DATASPACE_URL", "http://127.0.0.1:8000")


def credentials(*, browser_ok: bool, scope: str | None = None) -> Credentials:
    """``scope``: what the command needs (least privilege; a browser sign-in asks the person for exactly that)."""
    client_id = os.environ.get("DATASPACE_CLIENT_ID")
    secret = os.environ.get("DATASPACE_CLIENT_SECRET")
    if client_id and secret:
        return ClientCredentials(client_id, secret, scope=scope)
    if client_id and browser_ok:
        port = int(os.environ.get("DATASPACE_REDIRECT_PORT", "8765"))
        return AuthorizationCode(client_id, port=port, scope=scope)
    raise typer.BadParameter("set DATASPACE_CLIENT_ID and DATASPACE_CLIENT_SECRET")


def sdk_errors(fn: F) -> F:
    """SDK errors print one line (with the server's request id) and exit 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DataspaceClientError as exc:
            rid = getattr(exc, "request_id", None)
            err.print(
                f"[red]error:[/red] {exc}" + (f" (request {rid})" if rid else ""), highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
