"""The shared PSI specification (``clients.sdk._psi``) and the operator's side (``dataspace.linkage.protocol``)
without a server: test vectors, a full run between the two sides, message parsing, and the SDK's independence
from the server package."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from nacl import bindings as nb
from nacl.public import PrivateKey, SealedBox

from clients.sdk import _psi
from dataspace.linkage import protocol

VECTORS = json.loads((Path(__file__).parent / "psi_vectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", VECTORS["tests"], ids=lambda c: f"tc{c['tcId']}")
def test_vectors(case: dict) -> None:
    if case["result"] == "invalid":
        with pytest.raises(_psi.InvalidIdentifier):
            _psi.normalize(case["kind"], case["input"], default_country_code=case["default_country_code"])
        return
    norm = _psi.normalize(case["kind"], case["input"], default_country_code=case["default_country_code"])
    assert norm == case["normalized"]
    # H from the README's words, independently of the module.
    h = hashlib.sha512(b"dataspace-psi/v1\x00" + case["kind"].encode() + b"\x00" + norm.encode()).digest()
    spec = nb.crypto_core_ed25519_add(
        nb.crypto_core_ed25519_from_uniform(h[:32]), nb.crypto_core_ed25519_from_uniform(h[32:])
    )
    assert _psi.hash_to_group(case["kind"], norm).hex() == case["point"] == spec.hex()


def test_a_full_run_matches_exactly_the_intersection() -> None:
    operator = {sid: f"user{sid}@example.com" for sid in range(1, 41)}
    partner = [(f"USER{sid}@example.com", {"v": sid}) for sid in range(30, 61)]  # 30..40 in common
    first = protocol.first_message("email", operator)
    assert len(first.points) == 32 * protocol.padded_size(40) == 32 * 1024
    key = PrivateKey.generate()
    side = _psi.PartnerRun("email")
    reply, skipped = side.reply(
        contribution_id=7, public_key=bytes(key.public_key), operator_message=first.points, records=partner
    )
    assert skipped == 0
    decoded = _psi.decode_reply(_psi.encode_reply(reply))
    assert decoded == reply
    found = protocol.match(first.scalar, first.order, decoded)
    assert sorted(sid for _, sid in found) == list(range(30, 41))
    data_key = SealedBox(key).decrypt(decoded.sealed_data_key)
    for i, sid in found:
        blinded, sealed = decoded.records[i]
        assert _psi.open_row(data_key, 7, blinded, sealed) == {"v": sid}


def test_duplicate_and_unnormalisable_identifiers_are_left_out() -> None:
    first = protocol.first_message("phone", {1: "+8613800138000", 2: "+86 138 0013 8000", 3: "junk"})
    assert (first.order >= 0).sum() == 1  # one of the two customers sharing a number; junk never hashed
    side = _psi.PartnerRun("phone")
    reply, skipped = side.reply(
        contribution_id=1,
        public_key=bytes(PrivateKey.generate().public_key),
        operator_message=first.points,
        records=[("+8613800138000", {}), ("0086 138 0013 8000", {}), ("junk", {})],
    )
    assert skipped == 2
    assert len(reply.records) == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"DSPL\x02" + bytes(12), b"DSPL\x01" + bytes(11), b"DSPL\x01\x00\x00\x00\x05" + bytes(8)],
    ids=["empty", "version", "short header", "truncated set"],
)
def test_malformed_replies_are_refused(data: bytes) -> None:
    with pytest.raises(_psi.MalformedMessage):
        _psi.decode_reply(data)


def test_invalid_and_duplicate_points_are_refused() -> None:
    first = protocol.first_message("email", {1: "a@example.com"})
    good = _psi.PartnerRun("email").reply(
        contribution_id=1,
        public_key=bytes(PrivateKey.generate().public_key),
        operator_message=first.points,
        records=[("a@example.com", {}), ("b@example.com", {})],
    )[0]
    twice = _psi.PartnerReply(good.sealed_data_key, good.operator_set, [good.records[0], *good.records])
    with pytest.raises(_psi.MalformedMessage, match="twice"):
        protocol.match(first.scalar, first.order, twice)
    small_order = bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000")  # identity
    bad = _psi.PartnerReply(good.sealed_data_key, good.operator_set, [(small_order, b""), *good.records])
    with pytest.raises(_psi.MalformedMessage, match="invalid"):
        protocol.match(first.scalar, first.order, bad)
    with pytest.raises(_psi.MalformedMessage):
        _psi.decode_points(first.points[:-1])


def test_the_partner_protocol_needs_no_server_package() -> None:
    """``_psi.py`` runs on its own (only pynacl): loaded by path, it pulls in no server module."""
    path = Path(_psi.__file__)
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('psi', {str(path)!r}); "
        "m = sys.modules['psi'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "assert m.normalize('email', 'A@B.co') == 'a@b.co'; "
        "bad = [n for n in sys.modules if n.split('.')[0] in ('dataspace', 'clients', 'consent', 'fastapi')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
