"""``dataspace init``: create or upgrade the schema and generate key material once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dataspace import migrations
from dataspace.db import make_engine
from dataspace.keys import create_key_file
from dataspace.settings import Settings
from sandbox import SANDBOX_USER, SandboxUnavailable, ensure_sandbox_user


@dataclass(frozen=True)
class InitResult:
    database_url: str
    key_file: str
    keys_created: bool
    sandbox_user: str = ""  # what happened to the sandbox's system user: created / exists / not needed


def init(settings: Settings) -> InitResult:
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = settings.resolved_database_url
    engine = make_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    if url.startswith("sqlite:///"):
        # The embedded database holds sealed data and hashes; still, only the server may read it.
        db_path = Path(url.removeprefix("sqlite:///"))
        for path in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
            if path.exists():
                path.chmod(0o600)
    key_path = settings.resolved_key_file
    created = False
    if not key_path.exists():  # existing key material is never overwritten
        hsm = None
        if settings.key_backend == "pkcs11":  # the signing key is generated inside the HSM
            from dataspace.pkcs11 import configured_token

            hsm = configured_token()
        create_key_file(key_path, hsm)
        created = True
    try:
        # A root server runs partner code as this unprivileged user (sandbox._identity); without it, it
        # refuses code-bearing jobs.
        sandbox_user = f"{SANDBOX_USER} ({ensure_sandbox_user()})"
    except SandboxUnavailable as exc:
        sandbox_user = f"{SANDBOX_USER} (missing: {exc.reason}; code-bearing jobs will be refused)"
    return InitResult(_redact(settings.resolved_database_url), str(key_path), created, sandbox_user)


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
