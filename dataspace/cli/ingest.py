"""``dataspace ingest FILE``: validate and store customer data with a progress bar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dataspace.cli.common import console, err, one_line_errors
from dataspace.settings import Settings

app = typer.Typer()


def _row_count(path: Path) -> int | None:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    try:
        with path.open("rb") as fh:
            return max(sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1, 0)
    except OSError:
        return None


@app.command("ingest")
@one_line_errors
def ingest(
    path: Path,
    id_column: str = typer.Option("customer_id", help="Column holding the customer's reference."),
    batch_rows: int = typer.Option(100_000, min=1, help="Rows per atomic batch."),
    errors_out: Path | None = typer.Option(None, help="Write every row error to this CSV file."),
) -> None:
    """Ingest a CSV or Parquet file; bad rows are reported with their row number and reason."""
    from dataspace.context import Context
    from dataspace.ingest.service import ingest_file

    ctx = Context.open(Settings())
    try:
        with Progress(
            TextColumn("ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("rows", total=_row_count(path) if path.exists() else None)
            report = ingest_file(
                ctx.db,
                ctx.keys,
                ctx.vault,
                path,
                id_column=id_column,
                batch_rows=batch_rows,
                progress=lambda n: progress.advance(task, n),
            )
    finally:
        ctx.close()
    console.print(
        f"rows: {report.rows}  accepted: {report.accepted}  rejected: {report.rejected}  "
        f"created: {report.created}  updated: {report.updated}  ({report.seconds:.1f}s)"
    )
    for e in report.errors[:20]:
        err.print(f"row {e.row}: {e.column}: {e.reason}", highlight=False)
    if len(report.errors) > 20:
        err.print(f"... and {len(report.errors) - 20} more row errors", highlight=False)
    if errors_out is not None:
        import csv

        with errors_out.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "column", "reason"])
            writer.writerows((e.row, e.column, e.reason) for e in report.errors)
    if report.rejected:
        raise typer.Exit(2)
