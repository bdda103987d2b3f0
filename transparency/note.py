"""Checkpoints in the C2SP tlog-checkpoint format, signed as C2SP signed notes with Ed25519.

    <origin>\\n<size>\\n<base64 root hash>\\n          (the note text)
    \\n
    — <key name> <base64(4-byte key hash || signature)>\\n

The key hash is the first 4 bytes of SHA-256(key name || "\\n" || 0x01 || public key); a verifier key is
written ``<name>+<hex key hash>+<base64(0x01 || public key)>``. Every verification failure raises the same
``CheckpointError`` with no detail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from transparency.errors import CheckpointError

ALG_ED25519 = b"\x01"
DASH = "\u2014"  # the em dash that starts every signature line


class NoteSigner(Protocol):
    """An Ed25519 key that signs notes, wherever it lives (the server's key file, an HSM)."""

    @property
    def kid(self) -> str: ...

    @property
    def public_bytes(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root_hash).decode()}\n"


def key_name(origin_host: str, key: NoteSigner) -> str:
    return f"{origin_host}/{key.kid}"


def key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public).digest()[:4]


def verifier_key(name: str, public: bytes) -> str:
    """The C2SP verifier key string for an Ed25519 public key."""
    return f"{name}+{key_hash(name, public).hex()}+{base64.b64encode(ALG_ED25519 + public).decode()}"


def sign_checkpoint(checkpoint: Checkpoint, *, name: str, key: NoteSigner) -> str:
    text = checkpoint.text()
    sig = key.sign(text.encode())
    blob = base64.b64encode(key_hash(name, key.public_bytes) + sig).decode()
    return f"{text}\n{DASH} {name} {blob}\n"


@dataclass(frozen=True)
class Verifier:
    name: str
    hash: bytes
    key: VerifyKey


def parse_verifier(vkey: str) -> Verifier:
    try:
        name, khash, b64 = vkey.strip().split("+", 2)
        raw = base64.b64decode(b64, validate=True)
        if raw[:1] != ALG_ED25519 or len(raw) != 33 or len(khash) != 8:
            raise ValueError
        public = raw[1:]
        if not hmac.compare_digest(bytes.fromhex(khash), key_hash(name, public)):
            raise ValueError
        return Verifier(name, bytes.fromhex(khash), VerifyKey(public))
    except (ValueError, binascii.Error) as exc:
        raise CheckpointError from exc


def open_checkpoint(note: str, verifier_keys: str | Iterable[str]) -> Checkpoint:
    """Verify the signed note with any of ``verifier_keys`` and parse its checkpoint; raise
    ``CheckpointError`` on any failure."""
    keys = [verifier_keys] if isinstance(verifier_keys, str) else list(verifier_keys)
    verifiers = [parse_verifier(k) for k in keys]
    text, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise CheckpointError
    text += "\n"
    verified = False
    for line in sigs[:-1].split("\n"):
        try:
            dash, name, blob = line.split(" ")
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise CheckpointError from exc
        if dash != DASH:
            raise CheckpointError
        # Lines from other keys (witness cosignatures, other algorithms) are ignored, as signed-note says.
        for v in verifiers:
            if v.name == name and len(raw) >= 4 and hmac.compare_digest(v.hash, raw[:4]):
                if len(raw) != 68:
                    raise CheckpointError
                try:
                    v.key.verify(text.encode(), raw[4:])
                    verified = True
                except BadSignatureError:
                    raise CheckpointError from None
    if not verified:
        raise CheckpointError
    lines = text[:-1].split("\n")
    try:
        origin, size_s, root_b64 = lines[0], lines[1], lines[2]
        if not origin or not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
            raise ValueError
        root = base64.b64decode(root_b64, validate=True)
        if len(root) != 32:
            raise ValueError
    except (IndexError, ValueError, binascii.Error) as exc:
        raise CheckpointError from exc
    return Checkpoint(origin=origin, size=int(size_s), root_hash=root)


__all__ = [
    "ALG_ED25519",
    "DASH",
    "Checkpoint",
    "CheckpointError",
    "NoteSigner",
    "Verifier",
    "key_hash",
    "key_name",
    "open_checkpoint",
    "parse_verifier",
    "sign_checkpoint",
    "verifier_key",
]
