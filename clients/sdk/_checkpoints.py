"""Checkpoint memory on the client's side: remember the last verified checkpoint of each log, and on every
later fetch verify a consistency proof from it to the current one.

A server that shows this client a different log than it showed before (a split view), or rewrites or
truncates history and re-signs it, cannot also produce a consistency proof from what the client remembers:
``LogInconsistent`` is raised with both signed checkpoints, the evidence to hand to a witness, an auditor or
a regulator. The memory is a small JSON file (one entry per log origin), written atomically; nothing in it is
secret. Verification uses the same pure code as the server and the offline verifier (``transparency``:
RFC 9162 proofs, C2SP signed notes and cosignatures); no database is involved.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from clients.sdk._exceptions import DataspaceClientError
from transparency import merkle
from transparency.cosign import WitnessPolicy
from transparency.note import Checkpoint, CheckpointError, open_checkpoint


class CheckpointRejected(DataspaceClientError):
    """The server's checkpoint does not verify (operator signature, or too few witness cosignatures)."""


class LogInconsistent(DataspaceClientError):
    """The log the server shows now does not extend the one this client saw before (fork or rollback).

    ``remembered`` and ``current`` are the two signed checkpoints: together they prove the operator signed
    two incompatible views of its log."""

    def __init__(self, reason: str, *, remembered: str, current: str) -> None:
        super().__init__(f"the log is not consistent with the checkpoint remembered earlier: {reason}")
        self.reason = reason
        self.remembered = remembered
        self.current = current

    def write_evidence(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkstemp(prefix="log-evidence-", suffix=".txt", dir=directory)[1])
        path.write_text(
            f"# {self.reason}\n# remembered checkpoint:\n{self.remembered}\n# current checkpoint:\n{self.current}",
            encoding="utf-8",
        )
        return path


class CheckpointMemory:
    """The last verified checkpoint of each log origin, in ``path`` (a JSON file).

    ``log_keys``: the operator's verifier keys to trust; without them the keys the server names the first
    time are pinned in the file (trust on first use) and later checkpoints must verify with those.
    ``policy``: the witnesses whose cosignatures a checkpoint needs (quorum 0: none, as before witnesses).
    """

    def __init__(self, path: Path, *, log_keys: Iterable[str] = (), policy: WitnessPolicy | None = None) -> None:
        self.path = path
        self.log_keys = list(log_keys)
        self.policy = policy or WitnessPolicy()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"logs": {}, "keys": {}}
        except (OSError, ValueError) as exc:
            raise DataspaceClientError(f"the checkpoint memory {self.path} is unreadable") from exc
        return data if isinstance(data, dict) else {"logs": {}, "keys": {}}

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoints-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def remembered(self, origin: str) -> str | None:
        entry = self._load()["logs"].get(origin)
        return entry["note"] if entry else None

    def check(
        self,
        note: str,
        server_keys: Iterable[str],
        consistency: Callable[[int, int], list[bytes]],
    ) -> Checkpoint:
        """Verify ``note`` (signature, witness quorum, consistency with what was remembered) and remember it.

        ``consistency(first, second)`` fetches a consistency proof from the server."""
        data = self._load()
        data.setdefault("logs", {})
        data.setdefault("keys", {})
        origin = note.split("\n", 1)[0]
        keys = self.log_keys or data["keys"].get(origin) or list(server_keys)
        try:
            cp = open_checkpoint(note, keys)
            self.policy.check(note)
        except CheckpointError:
            raise CheckpointRejected(
                f"the checkpoint of {origin} does not verify"
                f" (operator key, or cosignatures from {self.policy.quorum} witnesses)"
            ) from None
        entry = data["logs"].get(origin)
        if entry is not None:
            old = open_checkpoint(entry["note"], keys)
            if old.size > cp.size:
                raise LogInconsistent(
                    f"rollback: {old.size} entries before, {cp.size} now", remembered=entry["note"], current=note
                )
            if old.size == cp.size and old.root_hash != cp.root_hash:
                raise LogInconsistent(
                    f"fork: two different trees of {cp.size} entries", remembered=entry["note"], current=note
                )
            if 0 < old.size < cp.size:
                try:
                    merkle.verify_consistency(
                        old.size, cp.size, old.root_hash, cp.root_hash, consistency(old.size, cp.size)
                    )
                except merkle.ProofError:
                    raise LogInconsistent(
                        f"fork: the tree of {old.size} entries seen before is not a prefix of the tree of {cp.size}",
                        remembered=entry["note"],
                        current=note,
                    ) from None
        if entry is None or cp.size >= open_checkpoint(entry["note"], keys).size:
            data["logs"][origin] = {"size": cp.size, "note": note}
            data["keys"].setdefault(origin, keys)
            self._save(data)
        return cp


def default_state_dir() -> Path:
    """``$DATASPACE_STATE_DIR``, else ``$XDG_STATE_HOME/dataspace``, else ``~/.local/state/dataspace``."""
    if os.environ.get("DATASPACE_STATE_DIR"):
        return Path(os.environ["DATASPACE_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dataspace"


def memory_from_env() -> CheckpointMemory:
    """The command line's memory: ``<state dir>/checkpoints.json``, with the witness policy of
    ``DATASPACE_WITNESS_KEYS`` (comma-separated cosigner keys) and ``DATASPACE_WITNESS_QUORUM`` (default 0)."""
    keys = [k.strip() for k in os.environ.get("DATASPACE_WITNESS_KEYS", "").split(",") if k.strip()]
    try:
        policy = WitnessPolicy.from_strings(keys, int(os.environ.get("DATASPACE_WITNESS_QUORUM", "0") or 0))
    except (ValueError, CheckpointError) as exc:
        raise DataspaceClientError("DATASPACE_WITNESS_KEYS / DATASPACE_WITNESS_QUORUM are not valid") from exc
    return CheckpointMemory(default_state_dir() / "checkpoints.json", policy=policy)
