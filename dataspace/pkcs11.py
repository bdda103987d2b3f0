"""Keys in a PKCS#11 module (an HSM; SoftHSM2 in tests): the epoch keys and the Ed25519 signing keys are
generated inside the token as sensitive, non-extractable objects, and every wrap, unwrap and signature runs
inside it: the epoch keys (AES-256), the Ed25519 keys of receipts, checkpoints and webhooks, and the ES256
keys of access tokens. Only public keys and key names leave it.

Selected by ``DATASPACE_KEY_BACKEND=pkcs11`` with ``DATASPACE_PKCS11_MODULE`` (the module's path),
``DATASPACE_PKCS11_TOKEN_LABEL`` and the user PIN in the environment variable named by
``DATASPACE_PKCS11_PIN_ENV`` (default ``DATASPACE_PKCS11_PIN``). Objects are named by label:
``ds-epoch-<bucket>-<generation>`` (AES-256, CKM_AES_GCM), ``ds-ed25519-<kid>`` (CKM_EDDSA) and
``ds-es256-<kid>`` (CKM_ECDSA over a SHA-256 digest).

One logged-in session per token and process; PKCS#11 operations on a session are serialized by a lock.
Creating an epoch key takes a file lock in the epoch directory so that two processes never create two keys
with one label.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from nacl.signing import VerifyKey
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from dataspace.errors import ConfigurationError
from dataspace.keystore import EpochCipher, KeyStoreSpec

EPOCH_PREFIX = "ds-epoch-"
ED25519_PREFIX = "ds-ed25519-"
ES256_PREFIX = "ds-es256-"
_ED25519_OID = "1.3.101.112"

_tokens: dict[tuple[str, str], Pkcs11Token] = {}
_tokens_lock = threading.Lock()


class Pkcs11Token:
    """A logged-in session on one token of one module (shared per process)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.lock = threading.RLock()
        self.signers: dict[str, Any] = {}  # private-key handles by label (a signature need not search)

    @classmethod
    def open(cls, module: str, label: str, pin: str) -> Pkcs11Token:
        with _tokens_lock:
            token = _tokens.get((module, label))
            if token is None:
                if not module or not pin:
                    raise ConfigurationError("PKCS#11 backend needs DATASPACE_PKCS11_MODULE and the user PIN")
                try:
                    lib = pkcs11.lib(module)
                    session = lib.get_token(token_label=label).open(user_pin=pin, rw=True)
                except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
                    raise ConfigurationError(f"cannot open PKCS#11 token {label!r}") from exc
                token = _tokens[(module, label)] = cls(session)
            return token

    def find(self, label: str, object_class: ObjectClass) -> Any | None:
        with self.lock:
            found = list(self.session.get_objects({Attribute.LABEL: label, Attribute.CLASS: object_class}))
        return found[0] if found else None

    def labels(self, prefix: str, object_class: ObjectClass) -> list[str]:
        with self.lock:
            return [
                label
                for obj in self.session.get_objects({Attribute.CLASS: object_class})
                if (label := obj[Attribute.LABEL]).startswith(prefix)
            ]


def token_from_spec(spec: KeyStoreSpec) -> Pkcs11Token:
    return Pkcs11Token.open(spec.module, spec.token_label, os.environ.get(spec.pin_env, ""))


def configured_token() -> Pkcs11Token:
    """The token the environment's settings name (``DATASPACE_PKCS11_*``)."""
    from dataspace.settings import Settings

    settings = Settings()
    return Pkcs11Token.open(
        settings.pkcs11_module, settings.pkcs11_token_label, os.environ.get(settings.pkcs11_pin_env, "")
    )


# --- epoch keys -------------------------------------------------------------------------------------
class _GcmKey:
    """AES-256-GCM inside the module; the same blob layout as ``cryptography``'s ``AESGCM``."""

    def __init__(self, token: Pkcs11Token, key: Any) -> None:
        self._token = token
        self._key = key

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        with self._token.lock:
            out: bytes = self._key.encrypt(
                data, mechanism=Mechanism.AES_GCM, mechanism_param=pkcs11.GCMParams(nonce, associated_data, 128)
            )
        return out

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        try:
            with self._token.lock:
                out: bytes = self._key.decrypt(
                    data, mechanism=Mechanism.AES_GCM, mechanism_param=pkcs11.GCMParams(nonce, associated_data, 128)
                )
        except pkcs11.PKCS11Error as exc:  # a bad tag, or a key destroyed by another process meanwhile
            raise InvalidTag from exc
        return out


class Pkcs11EpochKeys:
    """Epoch keys as non-extractable AES-256 secret-key objects of the token."""

    def __init__(self, spec: KeyStoreSpec) -> None:
        self._spec = spec
        self.token = token_from_spec(spec)

    @staticmethod
    def _label(bucket: int, generation: int) -> str:
        return f"{EPOCH_PREFIX}{bucket}-{generation}"

    def inventory(self) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for label in self.token.labels(EPOCH_PREFIX, ObjectClass.SECRET_KEY):
            bucket, generation = label.removeprefix(EPOCH_PREFIX).split("-")
            found.setdefault(int(bucket), []).append(int(generation))
        return {b: sorted(g) for b, g in found.items()}

    def generations(self, bucket: int) -> list[int]:
        return self.inventory().get(bucket, [])

    def create(self, bucket: int, generation: int) -> None:
        label = self._label(bucket, generation)
        directory = Path(self._spec.directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(directory / "pkcs11-create.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.token.find(label, ObjectClass.SECRET_KEY) is not None:
                return
            with self.token.lock:
                self.token.session.generate_key(
                    KeyType.AES,
                    256,
                    label=label,
                    store=True,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: True,
                    },
                )

    def destroy(self, bucket: int, generation: int) -> None:
        key = self.token.find(self._label(bucket, generation), ObjectClass.SECRET_KEY)
        if key is not None:
            with self.token.lock:
                key.destroy()

    def cipher(self, bucket: int, generation: int) -> EpochCipher | None:
        key = self.token.find(self._label(bucket, generation), ObjectClass.SECRET_KEY)
        return None if key is None else _GcmKey(self.token, key)

    def spec(self) -> KeyStoreSpec:
        return self._spec


# --- Ed25519 signing keys -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Pkcs11Ed25519Key:
    """An Ed25519 signing key held by the token: the same face as ``dataspace.keys.Ed25519Key``."""

    kid: str
    public: bytes
    created_at: str
    token: Pkcs11Token = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return ED25519_PREFIX + self.kid

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.public)

    @property
    def public_bytes(self) -> bytes:
        return self.public

    def sign(self, message: bytes) -> bytes:
        key = self.token.signers.get(self.label)
        if key is None:
            key = self.token.find(self.label, ObjectClass.PRIVATE_KEY)
            if key is None:
                raise ConfigurationError(f"signing key {self.kid} is not in the PKCS#11 token")
            self.token.signers[self.label] = key
        with self.token.lock:
            signature: bytes = key.sign(message, mechanism=Mechanism.EDDSA)
        return signature

    @classmethod
    def generate(cls, token: Pkcs11Token, created_at: str) -> Pkcs11Ed25519Key:
        with token.lock:
            params = token.session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(_ED25519_OID)}, local=True
            )
            public, private = params.generate_keypair(
                mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                store=True,
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True},
            )
            point = bytes(public[Attribute.EC_POINT])
        raw = point[2:] if len(point) == 34 and point[0] == 0x04 else point  # DER OCTET STRING around 32 bytes
        kid = hashlib.sha256(raw).hexdigest()[:16]
        with token.lock:
            private[Attribute.LABEL] = ED25519_PREFIX + kid
            public[Attribute.LABEL] = ED25519_PREFIX + kid
        return cls(kid=kid, public=raw, created_at=created_at, token=token)


# --- ES256 token keys -----------------------------------------------------------------------------------
class _HsmEcPrivateKey(ec.EllipticCurvePrivateKey):
    """A P-256 private key whose signatures are made by the token (CKM_ECDSA over a SHA-256 digest).

    It has the face of ``cryptography``'s EC private key so that JOSE libraries sign through it unchanged;
    the private value cannot be exported (``private_numbers``/``private_bytes`` refuse).
    """

    def __init__(self, token: Pkcs11Token, label: str, public: ec.EllipticCurvePublicKey) -> None:
        self._token = token
        self._label = label
        self._public = public

    def sign(
        self, data: bytes | bytearray | memoryview, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> bytes:
        algorithm = signature_algorithm.algorithm
        if not isinstance(algorithm, hashes.SHA256):
            raise ConfigurationError("the HSM token key signs ES256 (SHA-256) only")
        digest = hashlib.sha256(bytes(data)).digest()
        key = self._token.signers.get(self._label)
        if key is None:
            key = self._token.find(self._label, ObjectClass.PRIVATE_KEY)
            if key is None:
                raise ConfigurationError("token signing key is not in the PKCS#11 token")
            self._token.signers[self._label] = key
        with self._token.lock:
            raw: bytes = key.sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise ConfigurationError("the HSM token key only signs")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise ConfigurationError("the HSM token key cannot be exported")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise ConfigurationError("the HSM token key cannot be exported")

    def __copy__(self) -> _HsmEcPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _HsmEcPrivateKey:
        return self


@dataclass(frozen=True)
class Pkcs11TokenKey:
    """An ES256 JWT signing key held by the token: the same face as ``dataspace.keys.TokenKey``."""

    kid: str
    public_pem: bytes
    created_at: str
    token: Pkcs11Token = field(repr=False, compare=False)

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        public = serialization.load_pem_public_key(self.public_pem)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        return _HsmEcPrivateKey(self.token, ES256_PREFIX + self.kid, public)

    @classmethod
    def generate(cls, token: Pkcs11Token, created_at: str) -> Pkcs11TokenKey:
        with token.lock:
            params = token.session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
            )
            public, private = params.generate_keypair(
                store=True,
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True},
            )
            der = encode_ec_public_key(public)
        kid = hashlib.sha256(der).hexdigest()[:16]  # as dataspace.keys.key_id over the DER public key
        with token.lock:
            private[Attribute.LABEL] = ES256_PREFIX + kid
            public[Attribute.LABEL] = ES256_PREFIX + kid
        pem = serialization.load_der_public_key(der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(kid=kid, public_pem=pem, created_at=created_at, token=token)
