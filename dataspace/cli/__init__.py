"""The ``dataspace`` command line, an edge like ``dataspace.http``: each command group (or set of top-level
commands) is a module exposing a typer sub-app, and one list assembles them. Errors print one line and exit
non-zero; keys are never printed.

Command modules import the domain lazily, inside each command, so ``dataspace --help`` stays fast; nothing
below this package imports it. ``remote`` is the client's command line (``clients.cli``), mounted here.
"""

import sys

import typer

from clients import cli as remote
from dataspace.cli import (
    audit,
    backup,
    budgets,
    catalog,
    contracts,
    demo,
    ingest,
    jobs,
    keys,
    models,
    oauth_clients,
    receipts,
    server,
    users,
    witness,
    worker,
)
from dataspace.cli.common import console, err, one_line_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Dataspace: trusted data space server.")

# (name, sub-app) in help order; no name: the sub-app's commands sit directly under ``dataspace``.
GROUPS: list[tuple[str | None, typer.Typer]] = [
    (None, server.app),  # init, serve
    (None, backup.app),  # backup, restore
    (None, demo.app),
    (None, ingest.app),
    (None, worker.app),
    ("remote", remote.app),
    ("audit", audit.app),
    ("keys", keys.app),
    ("clients", oauth_clients.app),
    ("users", users.app),
    ("catalog", catalog.app),
    ("receipts", receipts.app),
    ("contracts", contracts.app),
    ("models", models.app),
    ("budgets", budgets.app),
    ("jobs", jobs.app),
    ("witness", witness.app),
]
for _name, _sub in GROUPS:
    app.add_typer(_sub, name=_name)


def main() -> None:
    app()
    sys.exit(0)


__all__ = ["GROUPS", "app", "console", "err", "main", "one_line_errors"]
