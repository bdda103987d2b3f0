"""Submitting the logs' checkpoints to the configured witnesses and keeping their cosignatures.

Each witness gets the latest checkpoint of each log with a consistency proof from the size it last cosigned
(learnt from its 409 answer, remembered per process); the cosignature lines it returns are verified with
its configured key and appended to the stored signed note, so every route that publishes a checkpoint
publishes it with the cosignatures gathered so far. Only the background task submits (``cosign_latest``);
routes only read (``witnessing``), so a witness that is down or hangs never slows a request.

Invariants: a witness that is down, slow or refusing never stops the server: its status says so (the
checkpoint route shows it; the log gets a warning) and the next round tries again. A cosignature is
stored only if it verifies with the configured key for that witness; the note is updated by compare and
set, so two replicas adding different witnesses' lines never lose one.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httpx
from sqlalchemy import CursorResult, update

from dataspace.tlog import log as tlog
from dataspace.tlog.models import TLogCheckpoint
from transparency.cosign import Cosigner, WitnessPolicy, add_cosignatures, verified_cosigners
from transparency.note import CheckpointError

if TYPE_CHECKING:
    from dataspace.db import Database
    from dataspace.settings import Settings

log = logging.getLogger("dataspace.tlog.witnesses")


@dataclass
class WitnessStatus:
    url: str
    name: str
    state: str = "unknown"  # ok | unreachable | refused | ahead-of-log | unknown
    sizes: dict[str, int] | None = None  # per log: the size the witness last cosigned
    detail: str = ""
    at: float | None = None

    def read(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "name": self.name,
            "state": self.state,
            "cosigned_sizes": dict(self.sizes or {}),
            "detail": self.detail,
        }


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.replace("\n", ",").split(",") if v.strip()]


def policy_from_settings(settings: Settings) -> WitnessPolicy:
    return WitnessPolicy.from_strings(_split(settings.witness_keys), settings.witness_quorum)


class Witnesses:
    """The configured witnesses of one server process and what it last heard from each."""

    def __init__(self, settings: Settings) -> None:
        urls, keys = _split(settings.witness_urls), _split(settings.witness_keys)
        if len(urls) != len(keys):
            raise ValueError("DATASPACE_WITNESS_URLS and DATASPACE_WITNESS_KEYS need one key per URL")
        self.policy = policy_from_settings(settings)
        self.members = [(u.rstrip("/"), Cosigner.parse(k)) for u, k in zip(urls, keys, strict=True)]
        self.status = {u: WitnessStatus(u, c.name, sizes={}) for u, c in self.members}
        self.timeout = settings.witness_timeout_seconds
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.members)

    def report(self) -> list[dict[str, Any]]:
        return [s.read() for s in self.status.values()]

    def cosign_latest(self, db: Database, log_name: str) -> str | None:
        """Get the latest checkpoint of ``log_name`` cosigned by every reachable witness; the stored note."""
        with self._lock:
            return self._cosign_latest(db, log_name)

    def _cosign_latest(self, db: Database, log_name: str) -> str | None:
        with db.session() as session:
            cp = tlog.latest_checkpoint(session, log=log_name)
        if cp is None or not self.members:
            return cp.note if cp else None
        note = cp.note
        lines: list[str] = []
        with httpx.Client(timeout=self.timeout) as http:
            for url, c in self.members:
                if verified_cosigners(note, [c]):
                    continue
                lines += self._submit(db, http, url, c, log_name, cp.size, note)
        if lines:
            note = self._store(db, log_name, cp.size, lines)
        return note

    def _submit(  # noqa: PLR0917  (one call site, private)
        self, db: Database, http: httpx.Client, url: str, c: Cosigner, log_name: str, size: int, note: str
    ) -> list[str]:
        st = self.status[url]
        assert st.sizes is not None
        old = min(st.sizes.get(log_name, 0), size)
        for _ in range(3):
            body = f"old {old}\n"
            if 0 < old < size:
                with db.session() as session:
                    proof = tlog.consistency_proof(session, log=log_name, first=old, second=size).hashes
                body += "".join(base64.b64encode(h).decode() + "\n" for h in proof)
            body += "\n" + note
            st.at = time.time()
            try:
                r = http.post(f"{url}/add-checkpoint", content=body.encode())
            except httpx.HTTPError as exc:
                self._mark(st, "unreachable", type(exc).__name__)
                return []
            if r.status_code == 409 and r.headers.get("content-type", "").startswith("text/x.tlog.size"):
                try:
                    theirs = int(r.text.strip())
                except ValueError:
                    self._mark(st, "refused", "409 without a size")
                    return []
                st.sizes[log_name] = theirs
                if theirs > size:
                    # The witness cosigned a larger tree than the log now has: a rollback (restored backup?).
                    self._mark(st, "ahead-of-log", f"witness cosigned size {theirs} of {log_name}, the log has {size}")
                    return []
                old = theirs
                continue
            if r.status_code != 200:
                self._mark(st, "refused", f"{r.status_code} {r.text.strip()[:200]}")
                return []
            try:
                got = verified_cosigners(add_cosignatures(note, r.text.splitlines()), [c])
            except CheckpointError:
                got = []
            if not got:
                self._mark(st, "refused", "the answer carries no valid cosignature from the configured key")
                return []
            st.sizes[log_name] = size
            self._mark(st, "ok", "")
            return [ln for ln in r.text.splitlines() if ln.split(" ")[1:2] == [c.name]]
        self._mark(st, "refused", "the witness kept answering 409")
        return []

    @staticmethod
    def _mark(st: WitnessStatus, state: str, detail: str) -> None:
        if state != "ok" and (st.state != state or st.detail != detail):
            log.warning("witness %s: %s %s", st.url, state, detail)
        st.state, st.detail = state, detail

    @staticmethod
    def _store(db: Database, log_name: str, size: int, lines: list[str]) -> str:
        for _ in range(5):  # compare and set: another replica may be adding its witnesses' lines meanwhile
            with db.transaction() as session:
                row = (
                    session.query(TLogCheckpoint).filter_by(log=log_name, size=size).order_by(TLogCheckpoint.id).first()
                )
                if row is None:
                    return ""
                new = add_cosignatures(row.note, lines)
                if new == row.note:
                    return new
                done = cast(
                    "CursorResult[Any]",
                    session.execute(
                        update(TLogCheckpoint)
                        .where(TLogCheckpoint.id == row.id, TLogCheckpoint.note == row.note)
                        .values(note=new)
                        .execution_options(synchronize_session=False)
                    ),
                ).rowcount
            if done:
                return new
        return ""


# Keyed by the settings object's id, holding the object itself: an id is never reused while its entry lives.
_BY_SETTINGS: dict[int, tuple[Settings, Witnesses]] = {}
_BY_SETTINGS_LOCK = threading.Lock()


def witnesses_for(settings: Settings) -> Witnesses:
    """The process's ``Witnesses`` for these settings (status is kept across calls)."""
    with _BY_SETTINGS_LOCK:
        got = _BY_SETTINGS.get(id(settings))
        if got is None or got[0] is not settings:
            got = _BY_SETTINGS[id(settings)] = (settings, Witnesses(settings))
        return got[1]


def witnessing(settings: Settings) -> dict[str, Any]:
    """What a checkpoint or proof route adds about witnesses: the policy and each witness's status as the
    background task last saw it. It only reads: a request never submits to a witness (one that is down or
    hangs would hold every checkpoint and proof request for up to the timeout, one after another behind the
    process's lock). The ``witness-cosigning`` background task (``dataspace.background``, every second)
    submits each log's latest checkpoint and stores the cosignatures it gets into the checkpoint's note, so
    routes serve the signed checkpoint with the cosignatures gathered so far (one sequenced a moment ago
    may carry none yet; a client that requires a quorum asks again a second later)."""
    try:
        w = witnesses_for(settings)
    except (ValueError, CheckpointError):
        log.error("DATASPACE_WITNESS_URLS / DATASPACE_WITNESS_KEYS / DATASPACE_WITNESS_QUORUM are not valid")
        return {"witness_quorum": None, "witness_keys": [], "witnesses": [], "witness_error": "misconfigured"}
    return {
        "witness_quorum": w.policy.quorum,
        "witness_keys": [c.vkey for c in w.policy.witnesses],
        "witnesses": w.report(),
    }
