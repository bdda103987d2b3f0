"""Envelope encryption of customer data: one AES-256-GCM data key per subject, wrapped by the master key.

Destroying a subject's wrapped key (crypto-shredding) makes every value sealed under it unrecoverable,
even in backups of the profile table. The subject id is bound as associated data, so a ciphertext moved
to another subject's row fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12


class DecryptionError(Exception):
    """A value could not be opened (wrong key, tampered, or shredded). Carries no detail on purpose."""


class Vault:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("master key must be 32 bytes")
        self._master = AESGCM(master_key)

    def new_data_key(self, subject_id: int) -> tuple[bytes, bytes]:
        """Return ``(data_key, wrapped_data_key)``."""
        dek = AESGCM.generate_key(bit_length=256)
        return dek, self.wrap(dek, subject_id)

    def wrap(self, dek: bytes, subject_id: int) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._master.encrypt(nonce, dek, b"dek/v1/%d" % subject_id)

    def unwrap(self, wrapped: bytes, subject_id: int) -> bytes:
        try:
            return self._master.decrypt(wrapped[:NONCE], wrapped[NONCE:], b"dek/v1/%d" % subject_id)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError from exc

    @staticmethod
    def seal(dek: bytes, plaintext: bytes, subject_id: int) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + AESGCM(dek).encrypt(nonce, plaintext, b"profile/v1/%d" % subject_id)

    @staticmethod
    def open(dek: bytes, sealed: bytes, subject_id: int) -> bytes:
        try:
            return AESGCM(dek).decrypt(sealed[:NONCE], sealed[NONCE:], b"profile/v1/%d" % subject_id)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError from exc
