"""Private set intersection for record linkage: the one shared specification (both sides) and the partner's side.

Pure Python over pynacl; imports nothing of the server, so a partner runs it with the SDK alone. The server's
operator side (``dataspace.linkage.protocol``) imports the shared parts from here, so normalisation, hashing
onto the group and the wire formats cannot drift apart.

Protocol (operator-as-receiver DH-PSI; Meadows 1986, Huberman-Franklin-Hogg 1999, and the "Private
Intersection-Sum" protocol of Ion et al., Google, 2017), in the prime-order Ed25519 group with
``H(x) = from_uniform(h[:32]) + from_uniform(h[32:])``, ``h = SHA-512("dataspace-psi/v1" 0 kind 0 norm(x))``:

1. operator -> partner: ``A = shuffle({H(y)^a : y of a customer who granted linkage} + random padding)``;
2. partner -> operator: ``A^b`` in the SAME order, and ``{(H(x)^b, sealed columns of x)}`` shuffled;
3. the operator computes ``(H(x)^b)^a`` and matches it against ``A^b``: it learns which consenting customers
   the partner knows (and their sealed columns); the partner receives nothing more (only, later, a DP count).

Scalars are fresh per run. Points received are checked (on the curve, in the prime-order subgroup, not the
identity) before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nacl import bindings as _nacl
from nacl.public import PublicKey, SealedBox

__all__ = [
    "DOMAIN",
    "KINDS",
    "POINT_BYTES",
    "InvalidIdentifier",
    "MalformedMessage",
    "PartnerReply",
    "PartnerRun",
    "blind",
    "decode_points",
    "decode_reply",
    "encode_reply",
    "hash_to_group",
    "is_valid_point",
    "normalize",
    "random_scalar",
    "row_aad",
]

DOMAIN = b"dataspace-psi/v1"
POINT_BYTES = 32
KINDS = ("email", "phone", "national_id")
REPLY_MAGIC = b"DSPL\x01"
ROW_AAD = b"dataspace-linkage-row/v1"
_NONCE = _nacl.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_KEY = _nacl.crypto_aead_xchacha20poly1305_ietf_KEYBYTES


class InvalidIdentifier(ValueError):
    """An identifier that does not normalise (it is skipped or rejected, never hashed as is)."""


class MalformedMessage(ValueError):
    """A protocol message that does not parse or holds an invalid group element."""


# --- normalisation (identical on both sides; test vectors in tests/unit/linkage/psi_vectors.json) ------------
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_NATIONAL_ID = re.compile(r"^[A-Z0-9]{4,32}$")


def normalize(kind: str, value: str, *, default_country_code: str | None = None) -> str:
    """The canonical form of an identifier.

    - ``email``: NFKC, trimmed, lower-cased (local part too: operators and partners disagree on case more
      often than mail servers honour it); must look like ``local@domain.tld``.
    - ``phone``: E.164 (``+`` and 8 to 15 digits) after removing spaces, dashes, dots and parentheses; a
      ``00`` prefix becomes ``+``; a national number (leading ``0`` trunk prefix or none) takes
      ``default_country_code`` when one is given, else it is invalid.
    - ``national_id``: NFKC, upper-cased, spaces and dashes removed, 4 to 32 letters or digits.
    """
    if not isinstance(value, str):
        raise InvalidIdentifier("identifiers are strings")
    text = unicodedata.normalize("NFKC", value).strip()
    if kind == "email":
        text = text.lower()
        if not _EMAIL.match(text) or len(text) > 254:
            raise InvalidIdentifier("not an e-mail address")
        return text
    if kind == "phone":
        text = _PHONE_SEPARATORS.sub("", text)
        if text.startswith("00"):
            text = "+" + text[2:]
        if not text.startswith("+"):
            if default_country_code is None or not default_country_code.isdigit():
                raise InvalidIdentifier("not an international phone number")
            text = "+" + default_country_code + text.removeprefix("0")
        digits = text[1:]
        if not digits.isascii() or not digits.isdigit() or not 8 <= len(digits) <= 15 or digits[0] == "0":
            raise InvalidIdentifier("not an E.164 phone number")
        return text
    if kind == "national_id":
        text = text.upper().replace(" ", "").replace("-", "")
        if not _NATIONAL_ID.match(text):
            raise InvalidIdentifier("not a national id")
        return text
    raise InvalidIdentifier(f"unknown identifier kind {kind!r}")


# --- the group ------------------------------------------------------------------------------------------------
def hash_to_group(kind: str, normalized: str) -> bytes:
    """``H``: SHA-512 of the domain-separated identifier, both halves mapped (Elligator 2) and added, so the
    point is uniform in the prime-order subgroup with nobody knowing its discrete logarithm."""
    h = hashlib.sha512(DOMAIN + b"\x00" + kind.encode() + b"\x00" + normalized.encode()).digest()
    return bytes(
        _nacl.crypto_core_ed25519_add(
            _nacl.crypto_core_ed25519_from_uniform(h[:32]), _nacl.crypto_core_ed25519_from_uniform(h[32:])
        )
    )


def random_scalar() -> bytes:
    """A uniform non-zero scalar modulo the group order."""
    while True:
        s = bytes(_nacl.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64)))
        if any(s):
            return s


def random_point() -> bytes:
    """A uniform element of the subgroup (padding: indistinguishable from ``H(y)^a`` under DDH)."""
    return bytes(_nacl.crypto_core_ed25519_from_uniform(secrets.token_bytes(32)))


def is_valid_point(p: bytes) -> bool:
    """On the curve, canonical, in the prime-order subgroup and not of small order."""
    return len(p) == POINT_BYTES and bool(_nacl.crypto_core_ed25519_is_valid_point(p))


def blind(scalar: bytes, points: Iterable[bytes]) -> list[bytes]:
    """``p^scalar`` for each point (no clamping: the scalar is a uniform residue)."""
    mul = _nacl.crypto_scalarmult_ed25519_noclamp
    return [bytes(mul(scalar, p)) for p in points]


def decode_points(data: bytes, *, limit: int | None = None) -> list[bytes]:
    """A message of concatenated points, each checked; ``MalformedMessage`` otherwise."""
    if len(data) % POINT_BYTES:
        raise MalformedMessage("the message is not a whole number of group elements")
    n = len(data) // POINT_BYTES
    if limit is not None and n > limit:
        raise MalformedMessage(f"more than {limit} group elements")
    points = [data[i : i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES)]
    for p in points:
        if not is_valid_point(p):
            raise MalformedMessage("a group element is invalid")
    return points


# --- sealed rows -------------------------------------------------------------------------------------------------
def row_aad(contribution_id: int, blinded_id: bytes) -> bytes:
    """Binds a row's ciphertext to its contribution and its blinded identifier (no row can be moved)."""
    return ROW_AAD + struct.pack(">Q", contribution_id) + blinded_id


def seal_row(data_key: bytes, contribution_id: int, blinded_id: bytes, values: Mapping[str, Any]) -> bytes:
    plaintext = json.dumps(dict(values), sort_keys=True, separators=(",", ":")).encode()
    nonce = os.urandom(_NONCE)
    return nonce + bytes(
        _nacl.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, row_aad(contribution_id, blinded_id), nonce, data_key
        )
    )


def open_row(data_key: bytes, contribution_id: int, blinded_id: bytes, sealed: bytes) -> dict[str, Any]:
    """The row's values; raises ``nacl.exceptions.CryptoError`` on a wrong key or a tampered row."""
    nonce, ct = sealed[:_NONCE], sealed[_NONCE:]
    plain = _nacl.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, row_aad(contribution_id, blinded_id), nonce, data_key)
    values = json.loads(plain)
    if not isinstance(values, dict):
        raise MalformedMessage("a sealed row is not an object")
    return values


# --- the reply (message 2) ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartnerReply:
    sealed_data_key: bytes  # the contribution's data key, sealed to the contribution's public key
    operator_set: list[bytes]  # A^b, in the order the operator sent A
    records: list[tuple[bytes, bytes]]  # (H(x)^b, sealed row), shuffled


def encode_reply(reply: PartnerReply) -> bytes:
    parts = [
        REPLY_MAGIC,
        struct.pack(">III", len(reply.operator_set), len(reply.records), len(reply.sealed_data_key)),
        reply.sealed_data_key,
        *reply.operator_set,
    ]
    for blinded, sealed in reply.records:
        parts += [blinded, struct.pack(">I", len(sealed)), sealed]
    return b"".join(parts)


def decode_reply(data: bytes, *, max_row_bytes: int = 4096) -> PartnerReply:
    """Parse message 2. Structure only; group elements are checked by the receiver."""
    view = memoryview(data)
    head = len(REPLY_MAGIC) + 12
    if len(data) < head or bytes(view[: len(REPLY_MAGIC)]) != REPLY_MAGIC:
        raise MalformedMessage("not a linkage reply (bad header)")
    n_op, n_rec, key_len = struct.unpack(">III", view[len(REPLY_MAGIC) : head])
    if key_len > 256:
        raise MalformedMessage("the sealed data key is too long")
    pos = head + key_len
    if len(data) < pos + n_op * POINT_BYTES:
        raise MalformedMessage("the reply is truncated")
    sealed_key = bytes(view[head:pos])
    op = [bytes(view[i : i + POINT_BYTES]) for i in range(pos, pos + n_op * POINT_BYTES, POINT_BYTES)]
    pos += n_op * POINT_BYTES
    records: list[tuple[bytes, bytes]] = []
    for _ in range(n_rec):
        if len(data) < pos + POINT_BYTES + 4:
            raise MalformedMessage("the reply is truncated")
        blinded = bytes(view[pos : pos + POINT_BYTES])
        (size,) = struct.unpack(">I", view[pos + POINT_BYTES : pos + POINT_BYTES + 4])
        pos += POINT_BYTES + 4
        if size > max_row_bytes or len(data) < pos + size:
            raise MalformedMessage("a sealed row is truncated or too large")
        records.append((blinded, bytes(view[pos : pos + size])))
        pos += size
    if pos != len(data):
        raise MalformedMessage("trailing bytes after the reply")
    return PartnerReply(sealed_key, op, records)


# --- the partner's side ------------------------------------------------------------------------------------------
class PartnerRun:
    """One run of the partner's side. Raw identifiers and the scalar ``b`` never leave this object."""

    def __init__(self, kind: str, *, default_country_code: str | None = None) -> None:
        if kind not in KINDS:
            raise InvalidIdentifier(f"unknown identifier kind {kind!r}")
        self.kind = kind
        self.default_country_code = default_country_code
        self._b = random_scalar()

    def __repr__(self) -> str:  # the scalar must never reach a log line
        return f"PartnerRun(kind={self.kind!r})"

    def reply(
        self,
        *,
        contribution_id: int,
        public_key: bytes,
        operator_message: bytes,
        records: Sequence[tuple[str, Mapping[str, Any]]],
        max_operator_points: int = 10_000_000,
    ) -> tuple[PartnerReply, int]:
        """Message 2 for ``records`` (identifier, column values). Returns the reply and how many records
        were skipped because their identifier does not normalise (or repeats one already given)."""
        operator_points = decode_points(operator_message, limit=max_operator_points)
        data_key = os.urandom(_KEY)
        seen: set[str] = set()
        ids: list[str] = []
        values: list[Mapping[str, Any]] = []
        skipped = 0
        for raw, row in records:
            try:
                norm = normalize(self.kind, raw, default_country_code=self.default_country_code)
            except InvalidIdentifier:
                skipped += 1
                continue
            if norm in seen:
                skipped += 1
                continue
            seen.add(norm)
            ids.append(norm)
            values.append(row)
        blinded = blind(self._b, (hash_to_group(self.kind, n) for n in ids))
        rows = [(p, seal_row(data_key, contribution_id, p, v)) for p, v in zip(blinded, values, strict=True)]
        secrets.SystemRandom().shuffle(rows)  # the order of the partner's file says nothing
        sealed_key = bytes(SealedBox(PublicKey(public_key)).encrypt(data_key))
        return PartnerReply(sealed_key, blind(self._b, operator_points), rows), skipped
