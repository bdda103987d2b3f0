"""What names a key store and what one of its epoch keys can do: shared by the vault (``dataspace.vault``) and
its PKCS#11 backend (``dataspace.pkcs11``), which the vault opens only when the store is a token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class EpochCipher(Protocol):
    """AES-256-GCM under one epoch key (``cryptography``'s ``AESGCM`` has this shape)."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


@dataclass(frozen=True)
class KeyStoreSpec:
    """A picklable description of a key store (worker processes rebuild their vault from it with
    ``dataspace.vault.open_store``)."""

    backend: str  # "file" | "pkcs11"
    directory: str  # the epoch directory (bucket count, journal; key files for "file")
    module: str = ""
    token_label: str = ""
    pin_env: str = ""
