"""The server's long-lived objects, built once from settings and handed to the app, CLI and tests."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from dataspace.audit import batched
from dataspace.db import Database, deferred_inserts
from dataspace.errors import DataspaceError
from dataspace.groupcommit import GroupCommit
from dataspace.jobs.engine import JobEngine
from dataspace.keys import KeyRing, load_key_file
from dataspace.keystore import KeyStoreSpec
from dataspace.points.earning import bonuses_batched
from dataspace.realtime import decisions_batched
from dataspace.settings import Settings
from dataspace.vault import Vault, open_store


def open_vault(settings: Settings) -> Vault:
    """The vault of the key store the settings name (``DATASPACE_KEY_BACKEND``)."""
    spec = KeyStoreSpec(
        backend=settings.key_backend,
        directory=str(settings.resolved_epoch_dir),
        module=settings.pkcs11_module,
        token_label=settings.pkcs11_token_label,
        pin_env=settings.pkcs11_pin_env,
    )
    return open_store(spec, buckets=settings.epoch_buckets)


log = logging.getLogger("dataspace.keys")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextlib.contextmanager
def _write_batch(session: Session) -> Iterator[None]:
    """What a group-commit batch wraps its writes in: real-time decisions stored together, authorization
    bonuses credited together (set-based), audit entries appended together, plain inserts held back to one
    multi-row INSERT per table. Left in that order: the bonuses add audit entries and inserts."""
    with deferred_inserts(session), batched(session), bonuses_batched(session), decisions_batched(session):
        yield


@dataclass
class Context:
    settings: Settings
    db: Database
    keys: KeyRing
    # The key file this context's ring came from and its (inode, mtime, size) when read; ``reload_keys``
    # swaps the ring when ``dataspace keys rotate`` (an atomic rename) replaced the file.
    key_file: Path | None = None
    _key_stamp: tuple[int, int, int] | None = field(default=None, repr=False)
    _writes: GroupCommit | None = field(default=None, repr=False)
    _vault: Vault | None = field(default=None, repr=False)

    def reload_keys(self) -> bool:
        """Load the key file again if it changed since it was read; returns whether the ring changed.

        A running server signs with the new active keys within one background interval of a rotation,
        and keeps every older key for verification (they stay in the file). A file that cannot be read
        or parsed keeps the current ring (and is reported); it is retried on the next call.
        """
        if self.key_file is None:
            return False
        stamp = _stamp(self.key_file)
        if stamp is None or stamp == self._key_stamp:
            return False
        try:
            ring = load_key_file(self.key_file)
        except Exception:  # a half-written or unreadable file: keep signing with what we have
            log.exception("key file changed but could not be loaded; keeping the current keys")
            return False
        self._key_stamp = stamp
        changed = [k.kid for k in ring.signing_keys] != [k.kid for k in self.keys.signing_keys] or [
            k.kid for k in ring.token_keys
        ] != [k.kid for k in self.keys.token_keys]
        self.keys = ring  # one reference assignment: readers see the old ring or the new one, never a mix
        if changed:
            log.info("key file reloaded", extra={"signing_kid": ring.signing_key.kid, "token_kid": ring.token_key.kid})
        return changed

    @property
    def vault(self) -> Vault:
        """Envelope encryption through the epoch keys of the configured key store (``dataspace.vault``)."""
        if self._vault is None:
            self._vault = open_vault(self.settings)
        return self._vault

    @property
    def jobs(self) -> JobEngine:
        """The job engine over this context's parts (built on each use: it sees a reloaded key ring)."""
        return JobEngine(db=self.db, keys=self.keys, vault=self.vault, settings=self.settings)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Context:
        settings = settings or Settings()
        path = settings.resolved_key_file
        stamp = _stamp(path)
        keys = load_key_file(path)
        return cls(
            settings=settings, db=Database(settings.resolved_database_url), keys=keys, key_file=path, _key_stamp=stamp
        )

    @property
    def writes(self) -> GroupCommit:
        """The group committer for short, frequent writes (consent changes): concurrent requests share a
        transaction and its COMMIT; their audit entries are appended once per batch."""
        if self._writes is None:
            self._writes = GroupCommit(
                self.db,
                around=_write_batch,
                threads=self.settings.write_threads,
                max_batch=self.settings.write_batch_max,
                own_errors=(DataspaceError,),
                name="writes",
            )
        return self._writes

    def writes_queued(self) -> int:
        """Writes queued for this process's next group commit (0 before the first one)."""
        writes = self._writes
        return writes.queued() if writes is not None else 0

    def stop_writes(self) -> None:
        """Finish the queued group-commit writes and stop their thread (a later write starts a new one)."""
        writes, self._writes = self._writes, None
        if writes is not None:
            writes.close()

    def close(self) -> None:
        self.stop_writes()
        self.db.dispose()
