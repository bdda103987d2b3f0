"""The server's long-lived objects, built once from settings and handed to the app, CLI and tests."""

from __future__ import annotations

from dataclasses import dataclass

from dataspace.db import Database
from dataspace.keys import KeyRing, load_key_file
from dataspace.settings import Settings
from dataspace.vault import Vault


@dataclass
class Context:
    settings: Settings
    db: Database
    keys: KeyRing

    @property
    def vault(self) -> Vault:
        return Vault(self.keys.master_key)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Context:
        settings = settings or Settings()
        keys = load_key_file(settings.resolved_key_file)
        return cls(settings=settings, db=Database(settings.resolved_database_url), keys=keys)

    def close(self) -> None:
        self.db.dispose()
