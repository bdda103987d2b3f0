"""``dataspace init``: create or upgrade the schema and generate key material once."""

from __future__ import annotations

from dataclasses import dataclass

from dataspace import migrations
from dataspace.db import make_engine
from dataspace.keys import create_key_file
from dataspace.settings import Settings


@dataclass(frozen=True)
class InitResult:
    database_url: str
    key_file: str
    keys_created: bool


def init(settings: Settings) -> InitResult:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    key_path = settings.resolved_key_file
    created = False
    if not key_path.exists():  # existing key material is never overwritten
        create_key_file(key_path)
        created = True
    return InitResult(_redact(settings.resolved_database_url), str(key_path), created)


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
