"""A copy of each log's latest published checkpoint kept outside the database (``DATASPACE_CHECKPOINT_DIR``).

A database backup carries the logs and their checkpoints; restoring an old one, or a tampered one, would
roll the logs back along with everything else. The copy here (one signed note per log, replaced only by a
larger tree) is what a restore is checked against: the restored log must contain the tree this checkpoint
commits to (a consistency proof), or the restore is refused unless the operator accepts the loss in so many
words (``dataspace restore --accept-log-rollback``). Keep the directory on storage that database backups and
restores do not touch; with replicas on several hosts each keeps its own copy, a lower bound of what was
published (or point them all at one shared directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger("dataspace.tlog")


def _size_of(note: str) -> int:
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else -1


def path_for(directory: Path, log_name: str) -> Path:
    return directory / f"{log_name}.checkpoint"


def read(directory: Path, log_name: str) -> str | None:
    """The latest checkpoint note recorded for ``log_name`` (unverified: callers open it with the keys)."""
    try:
        return path_for(directory, log_name).read_text()
    except FileNotFoundError:
        return None


def record(directory: Path, log_name: str, note: str) -> bool:
    """Keep ``note`` if it is for a larger tree than the one kept (atomic replace under a file lock, so
    sequencers of one host never move the copy backwards). Returns whether it was written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = path_for(directory, log_name)
    with open(directory / f".{log_name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read(directory, log_name)
        if current is not None and _size_of(current) >= _size_of(note):
            return False
        tmp = target.with_suffix(".tmp")
        with open(tmp, "w") as out:
            out.write(note)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
    return True


def record_quietly(directory: Path, log_name: str, note: str) -> None:
    """``record`` for the sequencer: a full disk must not stop the log (the copy lags; the log is reported)."""
    with contextlib.suppress(OSError):
        record(directory, log_name, note)
        return
    log.warning("could not keep a copy of the published checkpoint", extra={"log": log_name})
