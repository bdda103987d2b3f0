"""``dataspace jobs list``: the job queue, with each job's true state and a failure's details."""

from __future__ import annotations

import typer
from rich.table import Table

from dataspace.cli._steward import opened_context
from dataspace.cli.common import console, one_line_errors

app = typer.Typer(no_args_is_help=True, help="The job queue.")


@app.command("list")
@one_line_errors
def jobs_list(
    status: str | None = typer.Option(None, help="queued, running, succeeded, failed or cancelled."),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """The newest jobs first, with their true state and, for a failure, the operator's detail."""
    from sqlalchemy import select

    from dataspace.jobs.models import Job
    from dataspace.partners.models import Partner

    table = Table("id", "partner", "contract", "status", "shards", "submitted", "finished", "problem")
    with opened_context() as ctx, ctx.db.session() as session:
        stmt = select(Job, Partner.key).join(Partner, Partner.id == Job.partner_id).order_by(Job.id.desc())
        if status:
            stmt = stmt.where(Job.status == status)
        for j, key in session.execute(stmt.limit(limit)):
            table.add_row(
                str(j.id),
                key,
                str(j.contract_id),
                j.status,
                str(j.shard_count or "-"),
                j.created_at.strftime("%Y-%m-%d %H:%M"),
                j.finished_at.strftime("%Y-%m-%d %H:%M") if j.finished_at else "-",
                j.error_detail or j.error or "",
            )
    console.print(table)
