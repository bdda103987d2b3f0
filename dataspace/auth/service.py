"""Provisioning: users and OAuth clients. Secrets are returned once and stored hashed."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.auth.models import OAuthClient, User, digest
from dataspace.auth.passwords import hash_password, new_secret
from dataspace.auth.scopes import ROLE_SCOPES, STEP_UP_SCOPES, scopes_for
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.partners.models import Partner
from dataspace.principal import ROLES
from dataspace.subjects.models import Subject

GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
MIN_PASSWORD = 12


@dataclass(frozen=True)
class NewClient:
    client: OAuthClient
    secret: str | None  # shown once; None for public clients


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def resolve_partner(session: Session, partner_key: str | None) -> int | None:
    if partner_key is None:
        return None
    pid = session.scalar(select(Partner.id).where(Partner.key == partner_key))
    if pid is None:
        raise NotFound(f"no partner {partner_key!r}")
    return pid


def _check_owner(session: Session, role: str, subject_id: int | None, partner_id: int | None) -> None:
    if role == "customer" and subject_id is None:
        raise InvalidInput("a customer account must name its data subject")
    if role == "partner" and partner_id is None:
        raise InvalidInput("a partner account must name its partner")
    if role != "customer" and subject_id is not None:
        raise InvalidInput("only customer accounts have a data subject")
    if role != "partner" and partner_id is not None:
        raise InvalidInput("only partner accounts belong to a partner")
    if subject_id is not None and session.get(Subject, subject_id) is None:
        raise NotFound(f"no subject {subject_id}")
    if partner_id is not None and session.get(Partner, partner_id) is None:
        raise NotFound(f"no partner {partner_id}")


def create_user(
    *,
    session: Session,
    username: str,
    password: str,
    role: str,
    subject_id: int | None = None,
    partner_id: int | None = None,
) -> User:
    _check_role(role)
    if not _NAME.match(username):
        raise InvalidInput("user names are 1-128 letters, digits and . _ @ + -")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"passwords have at least {MIN_PASSWORD} characters")
    _check_owner(session, role, subject_id, partner_id)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role,
        subject_id=subject_id,
        partner_id=partner_id,
    )
    session.add(user)
    session.flush()
    return user


def create_client(
    *,
    session: Session,
    role: str,
    name: str = "",
    partner_id: int | None = None,
    grant_types: list[str] | None = None,
    redirect_uris: list[str] | None = None,
    scopes: list[str] | None = None,
    public: bool = False,
    client_id: str | None = None,
) -> NewClient:
    """Register a client. Client-credentials clients act as ``role`` themselves; browser (authorization
    code) clients act for the user who signs in, and their ``role`` is only the role they are meant for."""
    _check_role(role)
    grants = grant_types or (["authorization_code", "refresh_token"] if public else ["client_credentials"])
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown:
        raise InvalidInput(f"unknown grant type(s): {', '.join(unknown)}")
    if public and "client_credentials" in grants:
        raise InvalidInput("a public client cannot use client credentials")
    uris = list(redirect_uris or [])
    if "authorization_code" in grants and not uris:
        raise InvalidInput("an authorization-code client needs at least one redirect URI")
    for uri in uris:
        if (
            not (uri.startswith("https://") or uri.startswith("http://127.0.0.1") or uri.startswith("http://localhost"))
            or "#" in uri
        ):
            raise InvalidInput(f"redirect URI {uri!r} must be https (or http on loopback) without fragment")
    if "client_credentials" in grants:
        _check_owner(session, role, None, partner_id)
        if role == "customer":
            raise InvalidInput("customers sign in through the browser, not with client credentials")
    machine = "client_credentials" in grants
    wanted = scopes if scopes is not None else sorted(ROLE_SCOPES[role] - (STEP_UP_SCOPES if machine else set()))
    bad = sorted(set(wanted) - ROLE_SCOPES[role]) if machine else []
    if bad:
        raise InvalidInput(f"role {role} cannot hold scope(s): {', '.join(bad)}")
    if machine and STEP_UP_SCOPES & set(wanted):
        # These need a person's recent sign-in, which a client acting for itself never has.
        raise InvalidInput(f"client-credentials clients cannot hold {', '.join(sorted(STEP_UP_SCOPES & set(wanted)))}")
    cid = client_id or f"{role[:4]}-{secrets.token_hex(8)}"
    if session.scalar(select(OAuthClient.id).where(OAuthClient.client_id == cid)) is not None:
        raise Conflict(f"client {cid!r} already exists")
    secret = None if public else new_secret()
    client = OAuthClient(
        client_id=cid,
        secret_hash=digest(secret) if secret else None,
        name=name,
        role=role,
        partner_id=partner_id,
        redirect_uris=uris,
        grant_types=grants,
        scopes=scopes_for(role, " ".join(wanted), wanted, person=False) if machine else sorted(set(wanted)),
        public=public,
    )
    session.add(client)
    session.flush()
    return NewClient(client=client, secret=secret)


def get_client(session: Session, client_id: str) -> OAuthClient | None:
    return session.scalar(
        select(OAuthClient).where(OAuthClient.client_id == client_id, OAuthClient.disabled.is_(False))
    )
