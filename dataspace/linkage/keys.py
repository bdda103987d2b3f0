"""Partner-column keys outside the database, so that crypto-shredding holds against old backups.

Each contribution (one linkage run) has its own key-encryption key (KEK): 32 random bytes in the key store
directory (``<epoch dir>/linkage/<contribution>-0.key``, mode 0600), the directory that already holds the
epoch keys and is kept OUT of database backups (see ``dataspace.vault``). The database holds only what the
KEK wraps: the run's X25519 private key (the partner's data key is sealed to it) and, while the run is
open, the operator's PSI scalar.

Shredding (a contract revoked or ended, a run replaced) at once deletes the links and every wrapped key from
the live database, and destroys the KEK (overwritten, then unlinked) when the transaction that shredded has
committed; a crash in between leaves a KEK of a shredded run, which the periodic sweep
(``destroy_shredded``) destroys. From then on, no database backup taken before the shredding can open the
partner's rows: its wrapped private key is under a KEK that no longer exists. A restore runs ``reconcile``,
which shreds the restored rows of every run whose KEK is gone, so the restored database says what is true.

Failure cases: a KEK destroyed whose shredding then rolled back leaves a run that opens nothing; it reads as
shredded (``partner_columns`` joins nothing) and the next sweep marks it so. Losing the key store loses
every partner contribution (the partner runs the linkage again).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag

from dataspace.vault import NONCE, DecryptionError, FileEpochKeys, Vault

_GENERATION = 0  # one key per run, never rotated: a run is replaced by a new run, not re-keyed


class PartnerKeys:
    """The KEKs of linkage runs, one file each (the file layout of ``FileEpochKeys``, the run id as bucket)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files = FileEpochKeys(directory)

    @classmethod
    def of(cls, vault: Vault) -> PartnerKeys:
        """The partner-column keys kept beside the vault's epoch keys (its key store directory)."""
        return cls(vault.directory / "linkage")

    def create(self, contribution_id: int) -> None:
        """A fresh KEK for a new run (one left by a run whose creation rolled back is destroyed first)."""
        self._files.destroy(contribution_id, _GENERATION)
        self._files.create(contribution_id, _GENERATION)

    def destroy(self, contribution_id: int) -> None:
        self._files.destroy(contribution_id, _GENERATION)

    def held(self) -> set[int]:
        """The runs whose KEK exists."""
        return set(self._files.inventory())

    def has(self, contribution_id: int) -> bool:
        return self._files.cipher(contribution_id, _GENERATION) is not None

    def wrap(self, contribution_id: int, secret: bytes, label: bytes) -> bytes:
        cipher = self._files.cipher(contribution_id, _GENERATION)
        if cipher is None:
            raise DecryptionError
        nonce = os.urandom(NONCE)
        return nonce + cipher.encrypt(nonce, secret, label)

    def unwrap(self, contribution_id: int, wrapped: bytes, label: bytes) -> bytes:
        """The secret, or ``DecryptionError`` (the KEK is destroyed, or the value was altered)."""
        cipher = self._files.cipher(contribution_id, _GENERATION)
        if cipher is None:
            raise DecryptionError
        try:
            return cipher.decrypt(wrapped[:NONCE], wrapped[NONCE:], label)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError from exc
