"""Consent receipts: ISO/IEC TS 27560 records, signed with Ed25519, verifiable offline.

A receipt is a JSON object. Its signature covers the canonical JSON of the object without its
``signature`` member: keys sorted, no insignificant whitespace, UTF-8 (the RFC 8785 scheme for the values
receipts hold: strings, integers, booleans, null, arrays, objects; floats are refused so the encoding is
unambiguous). ``verify_receipt`` raises one uninformative ``InvalidReceipt`` on any failure.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from consent.errors import InvalidReceipt
from consent.model import DPV_STATUS, EventKind, Grant

SCHEMA = "ISO/IEC TS 27560:2023"
SIGNATURE_ALG = "Ed25519"
KANTARA_VERSION = "KI-CR-v1.1.0"


class Signer(Protocol):
    """Anything holding an Ed25519 private key: it signs, and names its public key by ``kid``."""

    @property
    def kid(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class SeedSigner:
    """A ``Signer`` over a raw 32-byte Ed25519 seed."""

    kid: str
    seed: bytes

    def __repr__(self) -> str:
        return f"SeedSigner(kid={self.kid!r})"

    def sign(self, message: bytes) -> bytes:
        return SigningKey(self.seed).sign(message).signature


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace, UTF-8); floats are refused."""
    _check_canonical(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check_canonical(value: Any) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_canonical(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("receipt object keys must be strings")
            _check_canonical(item)
        return
    raise TypeError(f"{type(value).__name__} has no canonical JSON form here")


def iso(at: datetime | None) -> str | None:
    """RFC 3339 UTC with a ``Z`` suffix, microseconds kept (receipts must reproduce server times)."""
    if at is None:
        return None
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ReceiptEvent:
    """One entry of a grant's history as shown on its receipts."""

    kind: EventKind
    at: datetime
    valid_from: datetime
    valid_until: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.kind.value,
            "time": iso(self.at),
            "validity": {"from": iso(self.valid_from), "until": iso(self.valid_until)},
            "state": DPV_STATUS[self.kind],
        }


@dataclass(frozen=True)
class ReceiptParty:
    """The controller that issues receipts (the operator): its legal identity as the operator configured it.

    ``contact`` is the e-mail address for privacy questions, ``dpo`` the data protection officer's contact,
    ``url`` the public privacy notice."""

    name: str
    contact: str
    address: str = ""
    url: str = ""
    phone: str = ""
    dpo: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "contact": self.contact,
            "email": self.contact,
            "address": self.address,
            "phone": self.phone,
            "dpo": self.dpo,
            "url": self.url,
        }


def build_receipt(
    *,
    receipt_id: str,
    grant: Grant,
    pii_principal_id: str,
    issued_at: datetime,
    events: Sequence[ReceiptEvent],
    purposes: Sequence[Mapping[str, Any]],
    pii_information: Sequence[Mapping[str, Any]],
    controller: ReceiptParty,
    storage_locations: Sequence[str],
    retention_days: int,
    jurisdiction: str,
    recipient_third_parties: Sequence[Mapping[str, Any]],
    withdrawal_method: str,
    language: str = "en",
    processing_operations: Sequence[Mapping[str, Any]] = (),
    notice: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An unsigned receipt for the latest of ``events`` (the whole history of the grant is included).

    Each purpose carries its ``lawful_basis`` (a DPV legal-basis term), each item of ``pii_information`` its
    ``data_source``; ``processing_operations`` lists what is done with the data (DPV processing terms) and
    ``notice`` names the privacy notice the consent was given under (its public URL)."""
    if not events:
        raise ValueError("a receipt needs at least one event")
    latest = events[-1]
    return {
        "schema": SCHEMA,
        "receipt_id": receipt_id,
        "record_id": f"grant:{grant.id}",
        "issued_at": iso(issued_at),
        "language": language,
        "pii_principal_id": pii_principal_id,
        "pii_controllers": [controller.as_json()],
        "notice": dict(notice) if notice is not None else {"url": controller.url},
        "purposes": [dict(p) for p in purposes],
        "processing_operations": [dict(p) for p in processing_operations],
        "pii_information": [dict(p) for p in pii_information],
        "granularity": grant.granularity.value,
        "storage_locations": sorted(set(storage_locations)),
        "retention_period": f"P{retention_days}D",
        "jurisdiction": jurisdiction,
        "recipient_third_parties": [dict(r) for r in recipient_third_parties],
        "withdrawal_method": withdrawal_method,
        "state": DPV_STATUS[latest.kind],
        "events": [e.as_json() for e in events],
    }


def sign_receipt(receipt: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    body = {k: v for k, v in receipt.items() if k != "signature"}
    signature = signer.sign(canonical_json(body))
    return {
        **body,
        "signature": {"alg": SIGNATURE_ALG, "kid": signer.kid, "value": base64.b64encode(signature).decode()},
    }


def verify_receipt(receipt: str | bytes | Mapping[str, Any], public_keys: Mapping[str, bytes]) -> dict[str, Any]:
    """Check a signed receipt against ``{kid: raw 32-byte Ed25519 public key}``; return it as a dict.

    Any failure (malformed JSON, unknown kid, wrong algorithm, bad signature) raises ``InvalidReceipt``.
    """
    try:
        doc = json.loads(receipt) if isinstance(receipt, (str, bytes)) else dict(receipt)
        if not isinstance(doc, dict):
            raise InvalidReceipt
        sig = doc["signature"]
        if not isinstance(sig, dict) or sig.get("alg") != SIGNATURE_ALG:
            raise InvalidReceipt
        kid, value = sig["kid"], sig["value"]
        if not isinstance(kid, str) or not isinstance(value, str) or kid not in public_keys:
            raise InvalidReceipt
        signature = base64.b64decode(value, validate=True)
        body = {k: v for k, v in doc.items() if k != "signature"}
        VerifyKey(bytes(public_keys[kid])).verify(canonical_json(body), signature)
    except InvalidReceipt:
        raise
    except (ValueError, TypeError, KeyError, binascii.Error, BadSignatureError) as exc:
        raise InvalidReceipt from exc
    return doc


def _epoch_seconds(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def to_kantara(
    receipt: Mapping[str, Any], *, policy_url: str = "", public_key: str = "", status: str | None = None
) -> dict[str, Any]:
    """Export a (verified) receipt as a Kantara Initiative Consent Receipt v1.1 JSON object.

    ``policyUrl`` is the notice the receipt names (``policy_url`` only for receipts without one).
    ``status`` is the grant's state when the rendering is asked for (``active``, ``withdrawn``, ``expired``):
    a receipt records one moment, the rendering tells the person where the consent stands now."""
    controllers = receipt["pii_controllers"]
    latest = receipt["events"][-1]
    first = receipt["events"][0]
    withdrawn = receipt["state"] != DPV_STATUS[EventKind.GRANTED]
    sensitive = any(bool(p.get("sensitive")) for p in receipt["pii_information"])
    pii_categories = [p.get("field") or p.get("dimension") for p in receipt["pii_information"]]
    recipients = receipt["recipient_third_parties"]
    return {
        "version": KANTARA_VERSION,
        "jurisdiction": receipt["jurisdiction"],
        "consentTimestamp": _epoch_seconds(first["time"]),
        "collectionMethod": "customer data account (explicit toggle per field, purpose and partner)",
        "consentReceiptID": receipt["receipt_id"],
        "publicKey": public_key,
        "language": receipt.get("language", "en"),
        "piiPrincipalId": receipt["pii_principal_id"],
        "piiControllers": [
            {
                "piiController": c["name"],
                "onBehalf": False,
                "contact": c["contact"],
                "address": {"text": c.get("address", "")},
                "email": c.get("email") or c["contact"],
                "phone": c.get("phone", ""),
                "piiControllerUrl": c.get("url", ""),
            }
            for c in controllers
        ],
        "policyUrl": (receipt.get("notice") or {}).get("url") or policy_url,
        "services": [
            {
                "service": receipt["record_id"],
                "purposes": [
                    {
                        "purpose": p["purpose"],
                        "purposeCategory": [p.get("dpv", "")],
                        "lawfulBasis": p.get("lawful_basis", ""),
                        "consentType": "EXPLICIT",
                        "piiCategory": pii_categories,
                        "primaryPurpose": True,
                        "termination": latest["validity"]["until"] or "until withdrawn",
                        "thirdPartyDisclosure": bool(recipients),
                        "thirdPartyName": ", ".join(
                            str(r.get("name") or r.get("partner_category") or "") for r in recipients
                        ),
                    }
                    for p in receipt["purposes"]
                ],
            }
        ],
        "sensitive": sensitive,
        "spiCat": [c for p in receipt["pii_information"] if p.get("sensitive") for c in [p.get("field")] if c],
        "consentStatus": status if status is not None else ("withdrawn" if withdrawn else "active"),
    }
