"""The demo's credentials file: every role's way in (browser user names and passwords with the page to open,
CLI/SDK client ids and secrets with the environment to set), written to ``<data dir>/demo-credentials.json``
with mode 0600 so a newcomer can find them after the start-up messages have scrolled away."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dataspace.auth.web_clients import CLI_CLIENTS
from dataspace.context import Context
from dataspace.demo.build import DemoAccounts

APPS = {
    "customer": ("/portal/", "Customer portal (My data)"),
    "partner": ("/partner/", "Partner view"),
    "steward": ("/steward/", "Steward console"),
    "compliance": ("/console/", "Compliance console"),
}


def credentials_path(ctx: Context) -> Path:
    return ctx.settings.data_dir / "demo-credentials.json"


def credentials(base: str, accounts: DemoAccounts) -> dict[str, Any]:
    """What the file holds: per role, the browser accounts and the command-line/SDK clients."""
    base = base.rstrip("/")
    roles: dict[str, dict[str, Any]] = {
        role: {"app": base + path, "app_name": name, "browser": [], "cli": []} for role, (path, name) in APPS.items()
    }
    for username, info in accounts.users.items():
        entry = {"username": username, "password": info["password"]}
        if "customer_id" in info:
            entry["customer_id"] = info["customer_id"]
        roles[info["role"]]["browser"].append(entry)
    for client_id, info in accounts.clients.items():  # partners' services: client credentials
        roles[info["role"]]["cli"].append(
            {
                "kind": "client credentials (SDK: ClientCredentials; CLI: dataspace remote ...)",
                "partner": info.get("partner"),
                "env": {
                    "DATASPACE_URL": base,
                    "DATASPACE_CLIENT_ID": client_id,
                    "DATASPACE_CLIENT_SECRET": info["secret"],
                },
            }
        )
    for client_id, role, _name in CLI_CLIENTS:  # people: the browser sign-in with one of their accounts above
        roles[role]["cli"].append(
            {
                "kind": "browser sign-in with PKCE as one of the accounts above (SDK: AuthorizationCode)",
                "env": {"DATASPACE_URL": base, "DATASPACE_CLIENT_ID": client_id},
            }
        )
    return {"base_url": base, "landing_page": base + "/", "api_docs": base + "/docs", "roles": roles}


def write_credentials(ctx: Context, accounts: DemoAccounts) -> Path:
    """Write (replace) the credentials file, readable by its owner only; returns its path."""
    path = credentials_path(ctx)
    data = json.dumps(credentials(ctx.settings.resolved_issuer, accounts), indent=2, ensure_ascii=False)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(data + "\n")
    os.chmod(tmp, 0o600)  # an existing file keeps its mode through O_CREAT
    tmp.replace(path)
    return path
