"""Key material: one JSON file (mode 0600) holding every secret the server uses.

- (no master key: subjects' data keys are wrapped by epoch keys held in the epoch key store, outside this
  file and the database, so that erasure can destroy them; see ``dataspace.vault``).
- ``pseudonym_key``: root for per-partner keyed pseudonyms (HMAC; one derived key per partner).
- ``blind_index_key``: HMAC key for looking up subjects by their external reference without storing it.
- ``signing_keys``: Ed25519 keys for receipts, checkpoints and webhooks (newest active first). With the
  PKCS#11 backend (``dataspace.pkcs11``) an entry holds only the key id and public key: the private key was
  generated in the HSM and signs there.
- ``token_keys``: EC P-256 keys for JWT access tokens (ES256); rotation keeps old ones for verification.
  With PKCS#11, likewise only the id and public key (the private key signs in the HSM).

The file is written with O_EXCL so ``init`` never overwrites existing keys. Key bytes are never logged:
``KeyRing.__repr__`` hides them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.signing import SigningKey, VerifyKey

from dataspace.errors import ConfigurationError, Conflict

if TYPE_CHECKING:
    from dataspace.pkcs11 import Pkcs11Token


class SigningKey25519(Protocol):
    """An Ed25519 signing key wherever it lives (the key file, or a PKCS#11 token)."""

    @property
    def kid(self) -> str: ...

    @property
    def created_at(self) -> str: ...

    @property
    def verify_key(self) -> VerifyKey: ...

    @property
    def public_bytes(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class JwtSigningKey(Protocol):
    """An ES256 key for access tokens wherever it lives; ``private_key`` may sign inside an HSM."""

    @property
    def kid(self) -> str: ...

    @property
    def created_at(self) -> str: ...

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey: ...

    @property
    def public_pem(self) -> bytes: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


@dataclass(frozen=True)
class Ed25519Key:
    kid: str
    seed: bytes = field(repr=False)
    created_at: str

    @functools.cached_property
    def signing_key(self) -> SigningKey:
        # Built once per key: deriving the key pair from the seed costs as much as a signature.
        return SigningKey(self.seed)

    @property
    def verify_key(self) -> VerifyKey:
        return self.signing_key.verify_key

    @property
    def public_bytes(self) -> bytes:
        return bytes(self.verify_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    @classmethod
    def generate(cls) -> Ed25519Key:
        sk = SigningKey.generate()
        return cls(kid=key_id(bytes(sk.verify_key)), seed=bytes(sk), created_at=_now())


@dataclass(frozen=True)
class TokenKey:
    kid: str
    private_pem: bytes = field(repr=False)
    created_at: str

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def generate(cls) -> TokenKey:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(kid=key_id(pub), private_pem=pem, created_at=_now())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class KeyRing:
    pseudonym_key: bytes = field(repr=False)
    blind_index_key: bytes = field(repr=False)
    signing_keys: list[SigningKey25519] = field(repr=False)
    token_keys: list[JwtSigningKey] = field(repr=False)

    def __repr__(self) -> str:
        return f"KeyRing(signing={[k.kid for k in self.signing_keys]}, token={[k.kid for k in self.token_keys]})"

    @classmethod
    def generate(cls, hsm: Pkcs11Token | None = None) -> KeyRing:
        """Fresh key material; with ``hsm`` the signing key is generated inside that PKCS#11 token."""
        return cls(
            pseudonym_key=secrets.token_bytes(32),
            blind_index_key=secrets.token_bytes(32),
            signing_keys=[_new_signing_key(hsm)],
            token_keys=[_new_token_key(hsm)],
        )

    # --- derived keys -------------------------------------------------------------------------
    @property
    def signing_key(self) -> SigningKey25519:
        """The active signing key (the newest)."""
        return self.signing_keys[0]

    @property
    def token_key(self) -> JwtSigningKey:
        return self.token_keys[0]

    def partner_pseudonym_key(self, partner_key: str) -> bytes:
        """A per-partner HMAC key, so two partners' pseudonyms can never be joined."""
        return hmac.new(self.pseudonym_key, b"pseudonym/v1/" + partner_key.encode(), hashlib.sha256).digest()

    def blind_index(self, external_ref: str) -> str:
        return hmac.digest(self.blind_index_key, external_ref.encode(), "sha256").hex()

    def verify_keys(self) -> dict[str, VerifyKey]:
        return {k.kid: k.verify_key for k in self.signing_keys}

    # --- rotation -----------------------------------------------------------------------------
    def rotate(self, hsm: Pkcs11Token | None = None) -> None:
        """New signing and token keys become active; old ones stay for verification. With ``hsm`` the new
        signing key is generated inside that PKCS#11 token."""
        self.signing_keys.insert(0, _new_signing_key(hsm))
        self.token_keys.insert(0, _new_token_key(hsm))

    # --- serialization ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "pseudonym_key": _b64(self.pseudonym_key),
            "blind_index_key": _b64(self.blind_index_key),
            "signing_keys": [_signing_key_json(k) for k in self.signing_keys],
            "token_keys": [_token_key_json(k) for k in self.token_keys],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyRing:
        try:
            return cls(
                pseudonym_key=_unb64(data["pseudonym_key"]),
                blind_index_key=_unb64(data["blind_index_key"]),
                signing_keys=[_signing_key_from_json(k) for k in data["signing_keys"]],
                token_keys=[_token_key_from_json(k) for k in data["token_keys"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError("key file is malformed") from exc


def _new_signing_key(hsm: Pkcs11Token | None) -> SigningKey25519:
    if hsm is None:
        return Ed25519Key.generate()
    from dataspace.pkcs11 import Pkcs11Ed25519Key

    return Pkcs11Ed25519Key.generate(hsm, _now())


def _signing_key_json(key: SigningKey25519) -> dict[str, Any]:
    if isinstance(key, Ed25519Key):
        return {"kid": key.kid, "seed": _b64(key.seed), "created_at": key.created_at}
    return {"kid": key.kid, "pkcs11": True, "public": _b64(key.public_bytes), "created_at": key.created_at}


def _signing_key_from_json(entry: dict[str, Any]) -> SigningKey25519:
    if not entry.get("pkcs11"):
        return Ed25519Key(entry["kid"], _unb64(entry["seed"]), entry["created_at"])
    from dataspace.pkcs11 import Pkcs11Ed25519Key, configured_token

    return Pkcs11Ed25519Key(entry["kid"], _unb64(entry["public"]), entry["created_at"], configured_token())


def _new_token_key(hsm: Pkcs11Token | None) -> JwtSigningKey:
    if hsm is None:
        return TokenKey.generate()
    from dataspace.pkcs11 import Pkcs11TokenKey

    return Pkcs11TokenKey.generate(hsm, _now())


def _token_key_json(key: JwtSigningKey) -> dict[str, Any]:
    if isinstance(key, TokenKey):
        return {"kid": key.kid, "private_pem": key.private_pem.decode(), "created_at": key.created_at}
    return {"kid": key.kid, "pkcs11": True, "public_pem": key.public_pem.decode(), "created_at": key.created_at}


def _token_key_from_json(entry: dict[str, Any]) -> JwtSigningKey:
    if not entry.get("pkcs11"):
        return TokenKey(entry["kid"], entry["private_pem"].encode(), entry["created_at"])
    from dataspace.pkcs11 import Pkcs11TokenKey, configured_token

    return Pkcs11TokenKey(entry["kid"], entry["public_pem"].encode(), entry["created_at"], configured_token())


def create_key_file(path: Path, hsm: Pkcs11Token | None = None) -> KeyRing:
    """Generate fresh key material into ``path`` (mode 0600); refuse to overwrite. With ``hsm`` the signing
    key is generated in that PKCS#11 token and the file holds only its id and public key."""
    ring = KeyRing.generate(hsm)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise Conflict(f"key file {path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "w") as fh:
        json.dump(ring.to_json(), fh)
    return ring


def load_key_file(path: Path) -> KeyRing:
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError as exc:
        raise ConfigurationError(f"key file {path} not found; run `dataspace init`") from exc
    if mode & 0o077:
        raise ConfigurationError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    return KeyRing.from_json(json.loads(path.read_text()))


def save_key_file(path: Path, ring: KeyRing) -> None:
    """Atomically replace the key file (used by rotation)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(ring.to_json(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
