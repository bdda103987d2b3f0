"""``dataspace catalog ...``: load and show the data manual (local administration)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dataspace.cli.common import console, one_line_errors
from dataspace.settings import Settings

app = typer.Typer(no_args_is_help=True, help="The data catalog (data manual).")


@app.command("load")
@one_line_errors
def load(path: Path) -> None:
    """Create or update dimensions, purposes, fields and partners from a YAML/JSON file (all or nothing)."""
    from dataspace.catalog import service
    from dataspace.context import Context

    doc = service.read_document(path)
    ctx = Context.open(Settings())
    try:
        with ctx.db.transaction() as session:
            counts = service.load_document(session, doc)
    finally:
        ctx.close()
    console.print(", ".join(f"{k}: {v}" for k, v in counts.items()))


@app.command("list")
@one_line_errors
def list_fields(retired: bool = typer.Option(False, help="Include retired fields.")) -> None:
    """Show the catalog's fields."""
    from dataspace.catalog import service
    from dataspace.context import Context

    ctx = Context.open(Settings())
    try:
        with ctx.db.session() as session:
            fields = service.list_fields(session, include_retired=retired)
            table = Table("key", "dimension", "type", "sensitivity", "points", "transforms", "status")
            for f in fields:
                table.add_row(
                    f.key,
                    f.dimension_key,
                    f.data_type,
                    f.sensitivity,
                    str(f.points_value),
                    ",".join(f.transforms),
                    f.status,
                )
    finally:
        ctx.close()
    console.print(table)
