"""``dataspace remote ...``: commands that talk to a running server through the SDK, assembled in one list.

Configuration from the environment: ``DATASPACE_URL`` (default http://127.0.0.1:8000), ``DATASPACE_CLIENT_ID``
and ``DATASPACE_CLIENT_SECRET`` (client credentials; without a secret, the customer commands sign in through
the browser with PKCE on ``http://127.0.0.1:$DATASPACE_REDIRECT_PORT/callback``, default port 8765).

Client code only: nothing here imports the server package (``dataspace.cli`` mounts ``app`` as ``remote``).
"""

import typer

from clients.cli import compliance, customer, partner, steward

app = typer.Typer(no_args_is_help=True, help="Talk to a running Dataspace server (DATASPACE_URL).")

# (name, sub-app) in help order; no name: the sub-app's commands sit directly under ``remote``.
GROUPS: list[tuple[str | None, typer.Typer]] = [
    (None, partner.commands),
    ("contracts", partner.contracts_app),
    ("models", partner.models_app),
    ("jobs", partner.jobs_app),
    ("audit", compliance.app),
    ("rewards", customer.app),
    ("steward", steward.app),
]
for _name, _sub in GROUPS:
    app.add_typer(_sub, name=_name)

__all__ = ["app"]
