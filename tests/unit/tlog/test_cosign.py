"""cosignature/v1 against the C2SP spec's examples and a reference implementation's vectors, and the
witness quorum policy."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey

from dataspace.keys import Ed25519Key
from transparency import merkle
from transparency.cosign import (
    Cosigner,
    WitnessPolicy,
    add_cosignatures,
    cosign,
    cosigner_key_id,
    open_cosigned,
    signed_message,
    timestamp_of,
    verified_cosigners,
)
from transparency.note import Checkpoint, CheckpointError, sign_checkpoint, verifier_key

SPEC_CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def test_spec_signed_message_is_byte_exact() -> None:
    # C2SP tlog-cosignature, "Ed25519 signed message".
    assert signed_message(SPEC_CHECKPOINT, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_spec_example_cosignature_carries_its_timestamp() -> None:
    # The spec's example cosignature line is for "time 1679315147" (key id, then the big-endian timestamp).
    line = (
        "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
        "qhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    )
    assert timestamp_of(line) == 1679315147


def test_reference_implementation_vectors() -> None:
    # transparency-dev/formats note_cosigv1_test.go: a native cosignature/v1 verifier key, and a
    # cosignature whose timestamp is 1727964367.
    c = Cosigner.parse("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert c.key_id.hex() == "da77ade7"
    assert c.vkey == "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    sig = "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="
    assert timestamp_of(f"\u2014 w {sig}") == 1727964367
    with pytest.raises(CheckpointError):  # an ordinary Ed25519 (0x01) key is not a cosigner key
        Cosigner.parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    with pytest.raises(CheckpointError):  # wrong key id
        Cosigner.parse("remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")


@pytest.fixture
def log_note() -> tuple[str, str]:
    key = Ed25519Key.generate()
    cp = Checkpoint("example.com/log", 3, merkle.root_from_leaf_hashes([b"\x01" * 32] * 3))
    note = sign_checkpoint(cp, name="example.com", key=key)
    return note, verifier_key("example.com", key.public_bytes)


def _witness(name: str) -> tuple[SigningKey, Cosigner]:
    k = SigningKey.generate()
    return k, Cosigner(name, bytes(k.verify_key))


def test_cosignature_layout_and_quorum(log_note: tuple[str, str]) -> None:
    note, vkey = log_note
    text = note.partition("\n\n")[0] + "\n"
    k1, w1 = _witness("w1.example")
    k2, w2 = _witness("w2.example")
    _, w3 = _witness("w3.example")
    line = cosign(text, name="w1.example", key=k1, timestamp=1700000000)
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 76
    assert raw[:4] == cosigner_key_id("w1.example", w1.public)
    assert int.from_bytes(raw[4:12], "big") == 1700000000
    one = add_cosignatures(note, [line])
    policy = WitnessPolicy((w1, w2, w3), 2)
    with pytest.raises(CheckpointError):  # one of two
        open_cosigned(one, vkey, policy)
    both = add_cosignatures(one, [cosign(text, name="w2.example", key=k2), line])  # duplicates are dropped
    assert both.count("w1.example") == 1
    assert open_cosigned(both, vkey, policy).size == 3
    assert WitnessPolicy().check(note) == []  # quorum 0: today's behaviour


def test_attacks_on_cosignatures(log_note: tuple[str, str]) -> None:
    note, _vkey = log_note
    text = note.partition("\n\n")[0] + "\n"
    k1, w1 = _witness("w1.example")
    _, w2 = _witness("w2.example")
    policy = WitnessPolicy((w1, w2), 1)
    # The same witness counted twice (its line repeated under a second, unknown name) is still one.
    line = cosign(text, name="w1.example", key=k1)
    assert len(verified_cosigners(add_cosignatures(note, [line, line.replace("w1.example", "w9")]), (w1, w2))) == 1
    # A cosignature moved onto another checkpoint does not verify, and spoils the note.
    other = note.replace("\n3\n", "\n4\n", 1)
    with pytest.raises(CheckpointError):
        policy.check(add_cosignatures(other, [line]))
    # An impostor signing under a trusted witness's name: unknown key id, ignored, so no quorum.
    imp, _ = _witness("w1.example")
    with pytest.raises(CheckpointError):
        policy.check(add_cosignatures(note, [cosign(text, name="w1.example", key=imp)]))
    # A tampered timestamp breaks the signature.
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1
    bad = f"\u2014 w1.example {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CheckpointError):
        policy.check(add_cosignatures(note, [bad]))
    with pytest.raises(ValueError, match="quorum"):
        WitnessPolicy((w1,), 2)
    with pytest.raises(ValueError, match="quorum"):
        WitnessPolicy((w1, w1), 2)  # one key listed twice is one witness
