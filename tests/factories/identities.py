"""Helpers for tests that need identities and real signed tokens.

``issue_token`` mints a token through the same generator and storage the token endpoint uses, so routes
see exactly what a real client would send::

    from tests.factories.identities import bearer, issue_token

    token = issue_token(ctx, "customer", subject_id=subject.id)
    client.get("/v1/me/consents", headers=bearer(token))

A customer token without ``subject_id`` gets a fresh subject; a partner token without ``partner_key`` gets
a fresh partner (so the ownership rules hold).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select

from dataspace.auth import service, tokens
from dataspace.auth.models import OAuthClient, User
from dataspace.auth.scopes import ROLE_SCOPES
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.partners.models import Partner
from dataspace.subjects.models import Subject

TEST_PASSWORD = "correct horse battery staple"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_subject(ctx: Context) -> int:
    with ctx.db.transaction() as session:
        subject = Subject(blind_ref=secrets.token_hex(16))
        session.add(subject)
        session.flush()
        return subject.id


def make_partner(
    ctx: Context, key: str | None = None, *, name: str = "Test partner", category: str = "insurer"
) -> Partner:
    with ctx.db.transaction() as session:
        partner = Partner(key=key or f"p{secrets.token_hex(4)}", name=name, category=category)
        session.add(partner)
        session.flush()
        return partner


def _partner_id(ctx: Context, partner_key: str | None) -> tuple[int, str]:
    if partner_key is None:
        partner = make_partner(ctx)
        return partner.id, partner.key
    with ctx.db.session() as session:
        pid = session.scalar(select(Partner.id).where(Partner.key == partner_key))
    if pid is None:
        pid = make_partner(ctx, partner_key).id
    return pid, partner_key


def make_user(
    ctx: Context,
    role: str = "customer",
    *,
    username: str | None = None,
    password: str = TEST_PASSWORD,
    subject_id: int | None = None,
    partner_key: str | None = None,
) -> User:
    if role == "customer" and subject_id is None:
        subject_id = make_subject(ctx)
    partner_id = _partner_id(ctx, partner_key)[0] if role == "partner" else None
    with ctx.db.transaction() as session:
        return service.create_user(
            session=session,
            username=username or f"{role}-{secrets.token_hex(4)}",
            password=password,
            role=role,
            subject_id=subject_id,
            partner_id=partner_id,
        )


def make_client(
    ctx: Context,
    role: str = "partner",
    *,
    partner_key: str | None = None,
    public: bool = False,
    grant_types: list[str] | None = None,
    redirect_uris: list[str] | None = None,
    scopes: list[str] | None = None,
    client_id: str | None = None,
) -> service.NewClient:
    """A registered client; ``.secret`` is the one-time secret (None for public clients)."""
    partner_id = None
    if role == "partner" and not public and "client_credentials" in (grant_types or ["client_credentials"]):
        partner_id = _partner_id(ctx, partner_key)[0]
    with ctx.db.transaction() as session:
        return service.create_client(
            session=session,
            role=role,
            partner_id=partner_id,
            public=public,
            grant_types=grant_types,
            redirect_uris=redirect_uris,
            scopes=scopes,
            client_id=client_id,
        )


def issue_token(
    ctx: Context,
    role: str,
    *,
    subject_id: int | None = None,
    partner_key: str | None = None,
    scopes: list[str] | None = None,
    ttl: int | None = None,
    person: bool | None = None,
    signed_in_ago: float | None = 0,
) -> str:
    """A real, stored, signed access token for ``role`` (``ttl`` may be negative to get an expired one).

    Customers (and any role with ``person=True``) get a token as after an authorization-code sign-in
    ``signed_in_ago`` seconds ago (None: no ``auth_time``); other roles get a client-credentials token.
    ``scopes`` default to everything the role may hold (client credentials never get step-up scopes)."""
    scope = " ".join(scopes) if scopes is not None else " ".join(sorted(ROLE_SCOPES[role]))
    person = role == "customer" if person is None else person
    auth_time = utcnow() - timedelta(seconds=signed_in_ago) if signed_in_ago is not None else None
    if person:
        user = make_user(ctx, role, subject_id=subject_id, partner_key=partner_key)
        client = _browser_client(ctx, role)
    elif role == "partner":
        client = make_client(ctx, "partner", partner_key=partner_key).client
        user = None
    else:
        client = make_client(ctx, role).client
        user = None
    with ctx.db.transaction() as session:
        client = session.merge(client)
        user = session.merge(user) if user is not None else None
        grant = "authorization_code" if user is not None else "client_credentials"
        token = tokens.issue(
            ctx.settings,
            ctx.keys,
            session,
            client=client,
            user=user,
            scope=scope,
            grant_type=grant,
            ttl=ttl,
            auth_time=auth_time,
        )
    return str(token["access_token"])


def _browser_client(ctx: Context, role: str = "customer") -> OAuthClient:
    client_id = "test-portal" if role == "customer" else f"test-{role}-web"
    with ctx.db.session() as session:
        existing = session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))
    if existing is not None:
        return existing
    return make_client(ctx, role, public=True, client_id=client_id, redirect_uris=["http://127.0.0.1/callback"]).client
