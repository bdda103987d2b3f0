"""Build the demo: catalog, 10,000 synthetic customers, partners, accounts, rewards and some consents.

Passwords and client secrets are generated here (never in the repository), printed once, and kept only in
``<data dir>/demo-accounts.json`` (mode 0600) so ``dataspace demo`` can show them again.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from dataspace.auth.models import User
from dataspace.auth.web_clients import ensure_web_clients
from dataspace.catalog import service as catalog
from dataspace.context import Context
from dataspace.demo import scenario
from dataspace.demo.population import generate
from dataspace.ingest.service import ingest_batches
from dataspace.partners.models import Partner
from dataspace.subjects.models import Subject

CATALOG = Path(__file__).with_name("catalog.yaml")
CUSTOMERS = (("alice", "C0000001"), ("bob", "C0000002"), ("chen", "C0000003"))


@dataclass
class DemoAccounts:
    users: dict[str, dict[str, str]] = field(default_factory=dict)  # username -> {role, password, ...}
    clients: dict[str, dict[str, str]] = field(default_factory=dict)  # client_id -> {role, secret, partner}


def accounts_path(ctx: Context) -> Path:
    return ctx.settings.data_dir / "demo-accounts.json"


def load_accounts(ctx: Context) -> DemoAccounts | None:
    path = accounts_path(ctx)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return DemoAccounts(users=data["users"], clients=data["clients"])


def _save_accounts(ctx: Context, accounts: DemoAccounts) -> None:
    path = accounts_path(ctx)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(accounts), fh, indent=2)


def _password() -> str:
    return secrets.token_urlsafe(12)


def build_demo(ctx: Context, *, customers: int = 10_000, progress: Callable[[str], None] = print) -> DemoAccounts:
    existing = load_accounts(ctx)
    with ctx.db.session() as session:
        populated = (session.scalar(select(func.count()).select_from(Subject)) or 0) > 0
    if existing is not None and populated:
        progress("demo data already present; reusing it")
        return existing
    progress("loading the catalog (data manual)")
    with ctx.db.transaction() as session:
        catalog.load_document(session, catalog.read_document(CATALOG))
    progress(f"generating and ingesting {customers:,} synthetic customers")
    report = ingest_batches(
        ctx.db, ctx.keys, ctx.vault, generate(customers).to_batches(max_chunksize=50_000), source="demo"
    )
    progress(f"  {report.accepted:,} customers stored encrypted in {report.seconds:.1f}s")
    accounts = DemoAccounts()
    _accounts(ctx, accounts)
    for step in EXTRA_STEPS:
        step(ctx, accounts, progress)
    _save_accounts(ctx, accounts)
    return accounts


def subject_id_for(ctx: Context, ref: str) -> int:
    with ctx.db.session() as session:
        sid = session.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index(ref)))
    if sid is None:
        raise LookupError(ref)
    return int(sid)


def _accounts(ctx: Context, accounts: DemoAccounts) -> None:
    from dataspace.auth import service as auth

    with ctx.db.transaction() as session:
        for username, role in (("steward", "steward"), ("steward2", "steward"), ("auditor", "compliance")):
            password = _password()
            auth.create_user(session=session, username=username, password=password, role=role)
            accounts.users[username] = {"role": role, "password": password}
        for username, ref in CUSTOMERS:
            password = _password()
            sid = subject_id_for(ctx, ref)
            auth.create_user(session=session, username=username, password=password, role="customer", subject_id=sid)
            accounts.users[username] = {"role": "customer", "password": password, "customer_id": ref}
        for partner in catalog.list_partners(session):
            new = auth.create_client(
                session=session, role="partner", name=partner.name, partner_id=partner.id, client_id=partner.key
            )
            accounts.clients[new.client.client_id] = {
                "role": "partner",
                "partner": partner.key,
                "secret": new.secret or "",
            }


def _web_pages(ctx: Context, accounts: DemoAccounts, progress: Callable[[str], None]) -> None:
    """The pages' clients, and a partner user for the partner view."""
    from dataspace.auth import service as auth

    ensure_web_clients(ctx.settings, ctx.db)
    progress("web pages: portal, console, partner-view and steward-console clients registered; CLI sign-in clients")
    with ctx.db.transaction() as session:
        partner = session.scalars(select(Partner).order_by(Partner.id)).first()
        if partner is None:
            return
        username = f"{partner.key}-analyst"
        if session.scalar(select(User.id).where(User.username == username)) is None:
            password = secrets.token_urlsafe(12)
            auth.create_user(
                session=session, username=username, password=password, role="partner", partner_id=partner.id
            )
            accounts.users[username] = {"role": "partner", "password": password}


# Later build steps (rewards, consents, a contract and a job) register here as their packages land.
EXTRA_STEPS: list[Callable[[Context, DemoAccounts, Callable[[str], None]], None]] = [
    _web_pages,
    scenario.build,
]
