"""The web pages' OAuth clients: each page (portal, console, partner view) signs people in as a public client
(authorization code + PKCE, no secret) whose redirect URI is the page itself."""

from __future__ import annotations

from sqlalchemy import select

from dataspace.auth import service as auth
from dataspace.auth.models import OAuthClient
from dataspace.db import Database
from dataspace.settings import Settings

# Each page signs people in as a public client (authorization code + PKCE, no secret) whose redirect URI is
# the page itself; the authorization server only lets a user sign in to the client of their role.
WEB_CLIENTS = (
    ("portal", "customer", "/portal/", "My data"),
    ("console", "compliance", "/console/", "Compliance console"),
    ("partner-view", "partner", "/partner/", "Partner view"),
    ("steward-console", "steward", "/steward/", "Steward console"),
)

# Stewards, compliance officers and customers using ``dataspace remote`` or the SDK sign in as themselves
# (authorization code + PKCE through the browser, the loopback redirect of ``clients.sdk.AuthorizationCode``),
# so an approval names the steward who gave it.
CLI_CLIENTS = (
    ("steward-cli", "steward", "Steward command line"),
    ("compliance-cli", "compliance", "Compliance command line"),
    ("customer-cli", "customer", "Customer command line"),
)
CLI_REDIRECT_URIS = ["http://127.0.0.1:8765/callback", "http://localhost:8765/callback"]


def page_redirect_uris(issuer: str, path: str) -> list[str]:
    """The page's URL under the issuer, plus the loopback twin (localhost <-> 127.0.0.1) for local use."""
    uris = [issuer.rstrip("/") + path]
    for a, b in (("//127.0.0.1", "//localhost"), ("//localhost", "//127.0.0.1")):
        if a in uris[0]:
            uris.append(uris[0].replace(a, b, 1))
    return uris


def ensure_web_clients(settings: Settings, db: Database) -> list[str]:
    """Register the pages' public clients if missing (idempotent); returns the ids it created."""

    created = []
    with db.transaction() as session:
        for client_id, role, path, name in WEB_CLIENTS:
            if session.scalar(select(OAuthClient.id).where(OAuthClient.client_id == client_id)) is not None:
                continue
            auth.create_client(
                session=session,
                role=role,
                name=name,
                public=True,
                client_id=client_id,
                redirect_uris=page_redirect_uris(settings.resolved_issuer, path),
            )
            created.append(client_id)
        for client_id, role, name in CLI_CLIENTS:
            if session.scalar(select(OAuthClient.id).where(OAuthClient.client_id == client_id)) is not None:
                continue
            auth.create_client(
                session=session,
                role=role,
                name=name,
                public=True,
                client_id=client_id,
                redirect_uris=list(CLI_REDIRECT_URIS),
            )
            created.append(client_id)
    return created
