"""The ``dataspace`` command line, an edge like ``dataspace.http``: every command module exposes typer
sub-apps and this list assembles them. Errors print one line and exit non-zero; keys are never printed.

Command modules import the domain lazily, inside each command, so ``dataspace --help`` stays fast; nothing
below this package imports it. ``remote`` is the client's command line (``clients.cli``), mounted here.
"""

import sys

import typer

from clients import cli as remote
from dataspace.cli import audit, auth, backup, catalog, demo, ingest, receipts, server, steward, witness, worker
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
    ("keys", auth.keys_app),
    ("clients", auth.clients_app),
    ("users", auth.users_app),
    ("catalog", catalog.app),
    ("receipts", receipts.app),
    ("contracts", steward.contracts_app),
    ("models", steward.models_app),
    ("budgets", steward.budgets_app),
    ("jobs", steward.jobs_app),
    ("witness", witness.app),
]
for _name, _sub in GROUPS:
    app.add_typer(_sub, name=_name)


def main() -> None:
    app()
    sys.exit(0)


__all__ = ["GROUPS", "app", "console", "err", "main", "one_line_errors"]
