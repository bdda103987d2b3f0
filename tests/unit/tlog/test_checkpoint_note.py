"""C2SP signed-note checkpoints: round trip, and one uninformative error for every kind of forgery."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.keys import Ed25519Key
from dataspace.usage.service import UsageEntry, usage_entry_json
from transparency.canonical import canonical_json
from transparency.note import Checkpoint, CheckpointError, key_hash, open_checkpoint, sign_checkpoint, verifier_key

KEY = Ed25519Key.generate()
NAME = "dataspace.example/k1"
VKEY = verifier_key(NAME, KEY.public_bytes)


def _note(size: int = 7, root: bytes = b"\x11" * 32) -> str:
    return sign_checkpoint(Checkpoint("dataspace.example/audit", size, root), name=NAME, key=KEY)


def test_format_is_c2sp() -> None:
    note = _note()
    body, sig = note.split("\n\n")
    root_b64 = base64.b64encode(b"\x11" * 32).decode()
    assert body == f"dataspace.example/audit\n7\n{root_b64}"
    dash, name, blob = sig.rstrip("\n").split(" ")
    assert dash == "\u2014"
    assert name == NAME
    raw = base64.b64decode(blob)
    assert raw[:4] == hashlib.sha256(NAME.encode() + b"\n\x01" + KEY.public_bytes).digest()[:4]
    assert raw[:4] == key_hash(NAME, KEY.public_bytes)
    assert VKEY.startswith(f"{NAME}+{raw[:4].hex()}+")
    KEY.verify_key.verify(body.encode() + b"\n", raw[4:])


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 2**63), root=st.binary(min_size=32, max_size=32))
def test_round_trip(size: int, root: bytes) -> None:
    cp = open_checkpoint(_note(size, root), VKEY)
    assert (cp.size, cp.root_hash, cp.origin) == (size, root, "dataspace.example/audit")


def test_forgeries_fail_the_same_way() -> None:
    note = _note()
    other = Ed25519Key.generate()
    forged = [
        note.replace("\n7\n", "\n8\n"),
        note.replace("audit", "usage", 1),
        note[:-5] + "AAAA\n",
        note.replace("\u2014", "-"),
        note.split("\n\n")[0] + "\n",
        sign_checkpoint(Checkpoint("dataspace.example/audit", 7, b"\x11" * 32), name=NAME, key=other),
    ]
    for bad in forged:
        with pytest.raises(CheckpointError) as exc:
            open_checkpoint(bad, VKEY)
        assert str(exc.value) == "checkpoint signature verification failed"
    with pytest.raises(CheckpointError):
        open_checkpoint(note, verifier_key(NAME, other.public_bytes))
    with pytest.raises(CheckpointError):
        open_checkpoint(note, "garbage")
    # a second signature by an unknown key is ignored; a known one suffices
    extra = sign_checkpoint(Checkpoint("dataspace.example/audit", 7, b"\x11" * 32), name="other/k", key=other)
    assert open_checkpoint(note + extra.split("\n\n")[1], VKEY).size == 7


text_st = st.text(max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    job=st.integers(1, 2**31 - 1),
    subject=st.integers(0, 2**31),
    fields=st.lists(text_st, min_size=1, max_size=4),
    partner=text_st,
    purpose=text_st,
    decision=st.none() | text_st,
    stamp=text_st,
)
def test_rendered_usage_entries_are_canonical(
    job: int, subject: int, fields: list[str], partner: str, purpose: str, decision: str | None, stamp: str
) -> None:
    u = UsageEntry(job, subject, tuple(fields), partner, purpose, decision)
    expected = canonical_json(
        {
            "time": stamp,
            "job_id": job,
            "subject_id": subject,
            "fields": sorted(set(fields)),
            "partner": partner,
            "purpose": purpose,
            "decision": decision,
        }
    )
    assert usage_entry_json(u, stamp) == expected
