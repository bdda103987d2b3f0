"""The witness's state machine (no HTTP): the tlog-witness status codes, and concurrent submissions never
roll it back (check and record are one transaction)."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest

from dataspace.keys import Ed25519Key
from dataspace.witness import WitnessRefusal, WitnessState
from transparency import merkle
from transparency.cosign import Cosigner, verified_cosigners
from transparency.note import Checkpoint, sign_checkpoint, verifier_key

ORIGIN = "log.example/usage"
LEAVES = [merkle.leaf_hash(str(i).encode()) for i in range(64)]


@pytest.fixture
def log_key() -> Ed25519Key:
    return Ed25519Key.generate()


def _note(key: Ed25519Key, size: int, leaves: list[bytes] = LEAVES) -> str:
    root = merkle.range_hash(leaves, 0, size) if size else merkle.EMPTY_ROOT
    return sign_checkpoint(Checkpoint(ORIGIN, size, root), name="log.example", key=key)


def _body(old: int, size: int, note: str) -> bytes:
    proof = merkle.consistency_proof(LEAVES, old, size) if 0 < old < size else []
    return (f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note).encode()


def _state(tmp_path: Path, key: Ed25519Key) -> WitnessState:
    state = WitnessState(tmp_path, "w.example")
    state.add_log(ORIGIN, [verifier_key("log.example", key.public_bytes)])
    return state


def test_protocol_answers(tmp_path: Path, log_key: Ed25519Key) -> None:
    state = _state(tmp_path, log_key)
    line = state.add_checkpoint(_body(0, 5, _note(log_key, 5)))
    assert verified_cosigners(_note(log_key, 5) + line, [state.cosigner])
    assert state.add_checkpoint(_body(5, 9, _note(log_key, 9)))
    with pytest.raises(WitnessRefusal) as e:
        state.add_checkpoint(_body(5, 12, _note(log_key, 12)))
    assert (e.value.status, e.value.size) == (409, 9)
    with pytest.raises(WitnessRefusal) as e:
        state.add_checkpoint(
            _body(0, 0, sign_checkpoint(Checkpoint(ORIGIN, 0, b"\x01" * 32), name="log.example", key=log_key))
        )
    assert e.value.status == 409  # the size check comes first: the witness is at 9
    other = [merkle.leaf_hash(b"x")] * 64
    with pytest.raises(WitnessRefusal) as e:
        state.add_checkpoint(_body(9, 9, _note(log_key, 9, other)))
    assert e.value.status == 422
    assert state.refusals()[-1][1].startswith("split view")
    # A restart (a new object on the same directory) keeps the key and the state.
    again = _state(tmp_path, log_key)
    assert again.cosigner == state.cosigner
    with pytest.raises(WitnessRefusal) as e:
        again.add_checkpoint(_body(0, 3, _note(log_key, 3)))
    assert (e.value.status, e.value.size) == (409, 9)


def test_concurrent_submissions_never_roll_back(tmp_path: Path, log_key: Ed25519Key) -> None:
    state = _state(tmp_path, log_key)
    state.add_checkpoint(_body(0, 4, _note(log_key, 4)))
    results: list[int] = []
    lock = threading.Lock()

    def submit(size: int) -> None:
        try:
            WitnessState(tmp_path, "w.example").add_checkpoint(_body(4, size, _note(log_key, size)))
            with lock:
                results.append(size)
        except WitnessRefusal as exc:
            with lock:
                results.append(-exc.status)

    threads = [threading.Thread(target=submit, args=(s,)) for s in range(5, 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    moved = [r for r in results if r > 0]
    assert len(moved) == 1  # exactly one moved on from 4; the rest were told the new size (409)
    assert sorted(r for r in results if r < 0) == [-409] * (len(threads) - 1)
    latest = state.latest(ORIGIN)
    assert latest is not None
    assert int(latest.split("\n")[1]) == moved[0]
    assert isinstance(state.cosigner, Cosigner)
