"""The witness's own state: its Ed25519 key (a file) and an SQLite database of the logs it watches, every
checkpoint it cosigned, and the evidence of every refused one. Nothing here touches the server's database.

Invariants:
- ``add_checkpoint`` checks the submitted old size against the latest cosigned size and records the new
  checkpoint in one ``BEGIN IMMEDIATE`` transaction, so two concurrent submissions can never roll the
  witness back (the race the tlog-witness spec describes); it returns a cosignature only after commit.
- The witness never cosigns two different roots for one size, nor a size below one it cosigned.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from transparency import merkle
from transparency.cosign import Cosigner, cosign, split_note
from transparency.note import CheckpointError, open_checkpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (origin TEXT PRIMARY KEY, vkeys TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cosigned (
    origin TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (origin, size));
CREATE TABLE IF NOT EXISTS refused (
    id INTEGER PRIMARY KEY, origin TEXT NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL);
"""


class WitnessRefusal(Exception):
    """A submission the witness does not cosign; ``status`` is the tlog-witness HTTP status."""

    def __init__(self, status: int, reason: str, size: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.size = size


@dataclass(frozen=True)
class Verdict:
    """The answer to a customer's remembered checkpoint (gossip)."""

    verdict: str  # consistent | split-view | unknown-size | unknown-log
    witness_note: str | None = None  # what the witness cosigned at that size (the evidence)


def load_or_create_key(data_dir: Path, name: str) -> tuple[SigningKey, Cosigner]:
    """The witness key (``<data_dir>/witness.key``, 0600, created once and never overwritten)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "witness.key"
    if not path.exists():
        seed = SigningKey.generate().encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(seed).decode() + "\n")
    key = SigningKey(base64.b64decode(path.read_text().strip()))
    return key, Cosigner(name, bytes(key.verify_key))


class WitnessState:
    def __init__(self, data_dir: Path, name: str) -> None:
        self.name = name
        self.key, self.cosigner = load_or_create_key(data_dir, name)
        self.db_path = data_dir / "witness.db"
        with self._conn() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    # --- configuration ---------------------------------------------------------------------------------
    def add_log(self, origin: str, vkeys: list[str]) -> None:
        for k in vkeys:  # refuse a key the witness could not use
            open_checkpoint_key_check(k)
        with self._conn() as db:
            db.execute(
                "INSERT INTO logs (origin, vkeys) VALUES (?, ?)"
                " ON CONFLICT (origin) DO UPDATE SET vkeys = excluded.vkeys",
                (origin, "\n".join(vkeys)),
            )

    def logs(self) -> dict[str, list[str]]:
        with self._conn() as db:
            return {o: v.split("\n") for o, v in db.execute("SELECT origin, vkeys FROM logs")}

    # --- the protocol ----------------------------------------------------------------------------------
    def add_checkpoint(self, body: bytes) -> str:
        """tlog-witness add-checkpoint: the cosignature line(s), or WitnessRefusal."""
        old, proof, note = _parse_request(body)
        origin = note.split("\n", 1)[0]
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT vkeys FROM logs WHERE origin = ?", (origin,)).fetchone()
                if row is None:
                    raise WitnessRefusal(404, "unknown log")
                try:
                    cp = open_checkpoint(note, row[0].split("\n"))
                except CheckpointError:
                    raise WitnessRefusal(403, "no valid signature from the log's key") from None
                if old > cp.size:
                    raise WitnessRefusal(400, "old size above the checkpoint size")
                latest = db.execute(
                    "SELECT size, root FROM cosigned WHERE origin = ? ORDER BY size DESC LIMIT 1", (origin,)
                ).fetchone()
                latest_size, latest_root = (latest[0], bytes(latest[1])) if latest else (0, merkle.EMPTY_ROOT)
                if old != latest_size:
                    raise WitnessRefusal(409, "old size is not the latest cosigned size", size=latest_size)
                if cp.size == 0 and cp.root_hash != merkle.EMPTY_ROOT:
                    raise self._refuse("size 0 with a root other than the empty tree's")
                if old == 0 and proof:
                    raise self._refuse("a consistency proof from size 0")
                if old == cp.size and cp.root_hash != latest_root:
                    raise self._refuse("split view: another root at a cosigned size")
                if 0 < old < cp.size:
                    try:
                        merkle.verify_consistency(old, cp.size, latest_root, cp.root_hash, proof)
                    except merkle.ProofError:
                        raise self._refuse("consistency proof does not verify") from None
                text, _ = split_note(note)
                line = cosign(text, name=self.name, key=self.key, timestamp=self._timestamp(db, origin))
                db.execute(
                    "INSERT INTO cosigned (origin, size, root, note, at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (origin, size) DO UPDATE SET note = excluded.note, at = excluded.at",
                    (origin, cp.size, cp.root_hash, text + "\n" + line, int(time.time())),
                )
                db.execute("COMMIT")
            except WitnessRefusal as exc:
                db.execute("ROLLBACK")
                if exc.status == 422:
                    # A correctly signed checkpoint that fails consistency is evidence of log misbehaviour.
                    db.execute(
                        "INSERT INTO refused (origin, reason, body, at) VALUES (?, ?, ?, ?)",
                        (origin, exc.reason, body.decode(), int(time.time())),
                    )
                raise
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return line

    @staticmethod
    def _refuse(reason: str) -> WitnessRefusal:
        return WitnessRefusal(422, reason)

    @staticmethod
    def _timestamp(db: sqlite3.Connection, origin: str) -> int:
        # Timestamps never go backwards for one log, even if the clock does.
        row = db.execute("SELECT max(at) FROM cosigned WHERE origin = ?", (origin,)).fetchone()
        return max(int(time.time()), int(row[0] or 0))

    def latest(self, origin: str) -> str | None:
        """The latest checkpoint this witness cosigned for ``origin`` (its own cosignature only)."""
        with self._conn() as db:
            row = db.execute(
                "SELECT note FROM cosigned WHERE origin = ? ORDER BY size DESC LIMIT 1", (origin,)
            ).fetchone()
        return row[0] if row else None

    def check(self, note: str) -> Verdict:
        """Gossip: is this log-signed checkpoint what the witness saw at that size?"""
        origin = note.split("\n", 1)[0]
        logs = self.logs()
        if origin not in logs:
            return Verdict("unknown-log")
        cp = open_checkpoint(note, logs[origin])  # CheckpointError: not the log's
        with self._conn() as db:
            row = db.execute(
                "SELECT root, note FROM cosigned WHERE origin = ? AND size = ?", (origin, cp.size)
            ).fetchone()
        if row is None:
            return Verdict("unknown-size", self.latest(origin))
        return Verdict("consistent" if bytes(row[0]) == cp.root_hash else "split-view", row[1])

    def refusals(self) -> list[tuple[str, str, str]]:
        with self._conn() as db:
            return [(o, r, b) for o, r, b in db.execute("SELECT origin, reason, body FROM refused ORDER BY id")]


def open_checkpoint_key_check(vkey: str) -> None:
    from transparency.note import parse_verifier

    parse_verifier(vkey)


def _parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    try:
        text = body.decode("utf-8")
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise ValueError
        lines = head.split("\n")
        first = lines[0]
        if not first.startswith("old "):
            raise ValueError
        size_s = first[4:]
        if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
            raise ValueError
        if len(lines) - 1 > 63:
            raise ValueError
        proof = [base64.b64decode(p, validate=True) for p in lines[1:]]
        if any(len(p) != 32 for p in proof):
            raise ValueError
        split_note(note)
    except (ValueError, UnicodeDecodeError, CheckpointError) as exc:
        raise WitnessRefusal(400, "malformed request") from exc
    return int(size_s), proof, note
