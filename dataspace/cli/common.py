"""What every command module shares: the output consoles and the one-line error convention."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from dataspace.errors import DataspaceError

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
