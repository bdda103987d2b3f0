"""Witness cosignatures on checkpoints (C2SP tlog-cosignature, Ed25519 ``cosignature/v1``) and the policy
that accepts a checkpoint only with cosignatures from a quorum of trusted witnesses.

A cosignature is one more signed-note line under the checkpoint:

    — <witness name> base64(key id (4) || timestamp (uint64, big-endian) || Ed25519 signature (64))

key id = SHA-256(name || "\\n" || 0x04 || public key)[:4]; the signed message is
``"cosignature/v1\\ntime <timestamp>\\n" + checkpoint text``. A witness verifier key is written
``<name>+<hex key id>+<base64(0x04 || public key)>``. Lines from unknown keys are ignored (a note may carry
any number of them); a line that names a trusted key but does not verify makes the whole note invalid, as
the signed-note spec says. Every failure raises the same uninformative ``CheckpointError``.

Quorum 0 is the behaviour before witnesses: the operator's signature alone is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from transparency.errors import CheckpointError
from transparency.note import DASH, Checkpoint, open_checkpoint

ALG_COSIGNATURE_V1 = b"\x04"
_MAX_TIMESTAMP = 2**63 - 1


def cosigner_key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_COSIGNATURE_V1 + public).digest()[:4]


def cosigner_vkey(name: str, public: bytes) -> str:
    """The verifier key string of a cosignature/v1 Ed25519 witness key."""
    return f"{name}+{cosigner_key_id(name, public).hex()}+{base64.b64encode(ALG_COSIGNATURE_V1 + public).decode()}"


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + checkpoint_text.encode()


@dataclass(frozen=True)
class Cosigner:
    """A witness's public identity: its name and Ed25519 key (a verifier key string parses into one)."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return cosigner_key_id(self.name, self.public)

    @property
    def vkey(self) -> str:
        return cosigner_vkey(self.name, self.public)

    @classmethod
    def parse(cls, vkey: str) -> Cosigner:
        try:
            name, khash, b64 = vkey.strip().split("+", 2)
            raw = base64.b64decode(b64, validate=True)
            if not name or raw[:1] != ALG_COSIGNATURE_V1 or len(raw) != 33 or len(khash) != 8:
                raise ValueError
            if not hmac.compare_digest(bytes.fromhex(khash), cosigner_key_id(name, raw[1:])):
                raise ValueError
        except (ValueError, binascii.Error) as exc:
            raise CheckpointError from exc
        return cls(name, raw[1:])


def cosign(checkpoint_text: str, *, name: str, key: SigningKey, timestamp: int | None = None) -> str:
    """One cosignature line (with its newline) over ``checkpoint_text`` (the note's text, signatures excluded)."""
    ts = int(time.time()) if timestamp is None else timestamp
    if not 0 < ts <= _MAX_TIMESTAMP:
        raise ValueError("timestamp out of range")
    sig = key.sign(signed_message(checkpoint_text, ts)).signature
    public = bytes(key.verify_key)
    blob = cosigner_key_id(name, public) + ts.to_bytes(8, "big") + sig
    return f"{DASH} {name} {base64.b64encode(blob).decode()}\n"


def split_note(note: str) -> tuple[str, list[str]]:
    """(text with its final newline, signature lines without newlines); CheckpointError if malformed."""
    text, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise CheckpointError
    return text + "\n", sigs[:-1].split("\n")


def timestamp_of(line: str) -> int:
    """The timestamp of a cosignature line (no signature check)."""
    try:
        raw = base64.b64decode(line.split(" ")[2], validate=True)
    except (IndexError, ValueError, binascii.Error) as exc:
        raise CheckpointError from exc
    if len(raw) != 76:
        raise CheckpointError
    return int.from_bytes(raw[4:12], "big")


def verified_cosigners(note: str, cosigners: Iterable[Cosigner]) -> list[Cosigner]:
    """The trusted cosigners whose cosignature on ``note`` verifies; CheckpointError if one that names a
    trusted key does not verify, or a line is malformed."""
    text, lines = split_note(note)
    trusted = list(cosigners)
    found: dict[bytes, Cosigner] = {}
    for line in lines:
        try:
            dash, name, blob = line.split(" ")
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise CheckpointError from exc
        if dash != DASH:
            raise CheckpointError
        for c in trusted:
            if c.name != name or len(raw) < 4 or not hmac.compare_digest(c.key_id, raw[:4]):
                continue
            if len(raw) != 76:
                raise CheckpointError
            ts = int.from_bytes(raw[4:12], "big")
            if not 0 < ts <= _MAX_TIMESTAMP:
                raise CheckpointError
            try:
                VerifyKey(c.public).verify(signed_message(text, ts), raw[12:])
            except BadSignatureError:
                raise CheckpointError from None
            found[c.public] = c
    return list(found.values())


@dataclass(frozen=True)
class WitnessPolicy:
    """Accept a checkpoint only with cosignatures from at least ``quorum`` of ``witnesses`` (distinct keys).
    ``quorum`` 0 accepts the operator's signature alone (the behaviour without witnesses)."""

    witnesses: tuple[Cosigner, ...] = ()
    quorum: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.quorum <= len({c.public for c in self.witnesses}):
            raise ValueError("the witness quorum must be between 0 and the number of distinct witness keys")

    @classmethod
    def from_strings(cls, vkeys: Iterable[str], quorum: int) -> WitnessPolicy:
        return cls(tuple(Cosigner.parse(k) for k in vkeys if k.strip()), quorum)

    def check(self, note: str) -> list[Cosigner]:
        """The witnesses that cosigned ``note``; CheckpointError if fewer than the quorum."""
        got = verified_cosigners(note, self.witnesses)
        if len(got) < self.quorum:
            raise CheckpointError
        return got


def open_cosigned(note: str, log_keys: str | Iterable[str], policy: WitnessPolicy) -> Checkpoint:
    """Verify the operator's signature and the witness quorum; the checkpoint, or CheckpointError."""
    cp = open_checkpoint(note, log_keys)
    policy.check(note)
    return cp


def add_cosignatures(note: str, lines: Iterable[str]) -> str:
    """``note`` with the signature lines in ``lines`` appended (each once)."""
    have = set(split_note(note)[1])
    out = note
    for raw in lines:
        line = raw.rstrip("\n")
        if line and line not in have:
            out += line + "\n"
            have.add(line)
    return out


__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosigner",
    "WitnessPolicy",
    "add_cosignatures",
    "cosign",
    "cosigner_key_id",
    "cosigner_vkey",
    "open_cosigned",
    "signed_message",
    "split_note",
    "timestamp_of",
    "verified_cosigners",
]
