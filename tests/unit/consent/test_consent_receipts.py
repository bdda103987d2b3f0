"""Receipts: canonical JSON, Ed25519 signatures that verify offline, and the Kantara export."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from consent import (
    EventKind,
    InvalidReceipt,
    ReceiptEvent,
    ReceiptParty,
    Scope,
    SeedSigner,
    build_receipt,
    canonical_json,
    new_grant,
    sign_receipt,
    to_kantara,
    verify_receipt,
)

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def signer():
    sk = SigningKey.generate()
    return SeedSigner(kid="k1", seed=bytes(sk)), {"k1": bytes(sk.verify_key)}


def make_receipt(kind=EventKind.GRANTED):
    grant = new_grant(id=42, subject_id=7, scope=Scope("underwriting", field="income", partner="acme"), now=T0)
    events = [ReceiptEvent(EventKind.GRANTED, T0, T0, None)]
    if kind is not EventKind.GRANTED:
        events.append(ReceiptEvent(kind, T0 + timedelta(days=1), T0, None))
    return build_receipt(
        receipt_id="r-1",
        grant=grant,
        pii_principal_id="subject:7",
        issued_at=events[-1].at,
        events=events,
        purposes=[{"purpose": "underwriting", "dpv": "dpv:InsuranceUnderwriting"}],
        pii_information=[{"field": "income", "label": "收入 income", "sensitive": False}],
        controller=ReceiptParty("Bank", "privacy@bank.example"),
        storage_locations=["cn-north", "cn-north"],
        retention_days=365,
        jurisdiction="CN",
        recipient_third_parties=[{"partner": "acme", "name": "Acme Insurance"}],
        withdrawal_method="DELETE /v1/me/consents/42",
    )


def test_receipt_carries_the_27560_fields():
    r = make_receipt()
    for key in (
        "record_id",
        "pii_principal_id",
        "purposes",
        "pii_information",
        "pii_controllers",
        "storage_locations",
        "retention_period",
        "jurisdiction",
        "recipient_third_parties",
        "withdrawal_method",
        "events",
    ):
        assert key in r
    assert r["state"] == "dpv:ConsentGiven"
    assert r["events"][0]["validity"] == {"from": "2025-03-01T09:30:00.000000Z", "until": None}
    assert r["storage_locations"] == ["cn-north"]
    assert make_receipt(EventKind.WITHDRAWN)["state"] == "dpv:ConsentWithdrawn"
    assert make_receipt(EventKind.EXPIRED)["events"][-1]["state"] == "dpv:ConsentExpired"


def test_sign_then_verify_roundtrip(signer):
    s, keys = signer
    signed = sign_receipt(make_receipt(), s)
    text = json.dumps(signed, indent=2, ensure_ascii=False)  # re-serialized: verification is canonical
    assert verify_receipt(text, keys)["receipt_id"] == "r-1"
    assert verify_receipt(signed, keys) == signed


def tamper_state(r):
    r["state"] = "dpv:ConsentGiven" if r["state"] != "dpv:ConsentGiven" else "dpv:ConsentWithdrawn"


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(tamper_state, id="flipped-state"),
        pytest.param(lambda r: r["events"].pop(), id="dropped-event"),
        pytest.param(lambda r: r["recipient_third_parties"].append({"partner": "evil"}), id="added-recipient"),
        pytest.param(lambda r: r["signature"].update(kid="other"), id="unknown-kid"),
        pytest.param(lambda r: r["signature"].update(alg="none"), id="alg-none"),
        pytest.param(lambda r: r["signature"].update(value="!!"), id="garbage-signature"),
        pytest.param(lambda r: r.pop("signature"), id="stripped-signature"),
        pytest.param(lambda r: r["signature"].update(value=base64.b64encode(b"\0" * 64).decode()), id="zero-sig"),
    ],
)
def test_tampered_receipts_fail_with_one_error(signer, attack):
    s, keys = signer
    signed = sign_receipt(make_receipt(EventKind.WITHDRAWN), s)
    attack(signed)
    with pytest.raises(InvalidReceipt) as info:
        verify_receipt(json.dumps(signed), keys)
    assert str(info.value) == "invalid consent receipt"


@pytest.mark.parametrize("junk", ["", "not json", "[]", "null", b"\xff\xfe"])
def test_garbage_is_invalid(signer, junk):
    with pytest.raises(InvalidReceipt):
        verify_receipt(junk, signer[1])


def test_signature_by_another_key_fails(signer):
    s, _ = signer
    other = SigningKey.generate()
    with pytest.raises(InvalidReceipt):
        verify_receipt(sign_receipt(make_receipt(), s), {"k1": bytes(other.verify_key)})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_is_stable_under_reserialization(value):
    once = canonical_json(value)
    assert canonical_json(json.loads(once)) == once


def test_canonical_json_sorts_and_strips():
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    with pytest.raises(TypeError):
        canonical_json({"x": 1.5})


def test_kantara_export(signer):
    signed = sign_receipt(make_receipt(EventKind.WITHDRAWN), signer[0])
    k = to_kantara(signed, public_key="abc")
    assert k["version"] == "KI-CR-v1.1.0"
    assert k["consentReceiptID"] == "r-1"
    assert k["piiPrincipalId"] == "subject:7"
    assert k["consentTimestamp"] == int(T0.timestamp())
    assert k["services"][0]["purposes"][0]["piiCategory"] == ["income"]
    assert k["services"][0]["purposes"][0]["thirdPartyName"] == "Acme Insurance"
    assert k["consentStatus"] == "withdrawn"
    assert k["sensitive"] is False
