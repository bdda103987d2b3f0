"""Offline verification of a log export (JSONL or CSV, headed by the signed checkpoint): pure, no database.

JSONL: the first line is ``{"type":"checkpoint",...,"note":"<signed note>"}``; every further line is
``{"index":i,"leaf_hash":"<hex>","entry":<canonical entry JSON>}``. CSV: ``# checkpoint <same JSON>``,
then a header row and one row per entry whose ``entry`` column holds the canonical entry JSON (the other
columns are for people, and the verifier checks each against the entry). The verifier hashes the entry
bytes exactly as exported, rebuilds the tree with a stack, and checks the root against the checkpoint it
has verified with the operator's public key. The server writes exports with ``dataspace.tlog.export``.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transparency import merkle
from transparency.canonical import canonical_json
from transparency.cosign import WitnessPolicy
from transparency.errors import CheckpointError, TransparencyError
from transparency.note import open_checkpoint

CSV_COLUMNS = {
    "audit": ["time", "actor", "role", "client_id", "action", "target", "result", "request_id", "details"],
    "usage": ["time", "job_id", "subject_id", "fields", "partner", "purpose", "decision"],
}


def cell(value: Any) -> str:
    """A CSV column's text for an entry's value, exactly as the exporter renders it."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return canonical_json(value)
    return str(value)


# --- offline verification ----------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    log: str | None
    size: int
    entries: int
    root_hash: str | None
    first_bad_index: int | None = None
    reason: str | None = None

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK: {self.entries} entries of log {self.log!r}; root {self.root_hash} matches the signed checkpoint"
            )
        where = f" (first bad entry: index {self.first_bad_index})" if self.first_bad_index is not None else ""
        return f"TAMPERED: {self.reason}{where}"


class _TamperedError(TransparencyError):
    def __init__(self, reason: str, index: int | None) -> None:
        super().__init__(reason)
        self.reason, self.index = reason, index


_PFX = '{"index":'
_MID = ',"leaf_hash":"'
_END = '","entry":'


def _jsonl_records(lines: Iterable[str], start: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(index, entry bytes, claimed leaf hash) per line; a fast path for the layout we write, and a
    general JSON path for anything else (re-canonicalized)."""
    expected = start
    for raw in lines:
        line = raw.rstrip("\n")
        if not line:
            continue
        try:
            j = line.find(",", 9) if line.startswith(_PFX) else -1
            if j > 0 and line[j : j + 14] == _MID and line[j + 78 : j + 88] == _END and line.endswith("}"):
                idx = int(line[9:j])
                claimed = bytes.fromhex(line[j + 14 : j + 78])
                body = line[j + 88 : -1].encode()
            else:
                obj = json.loads(line)
                idx = int(obj["index"])
                claimed = bytes.fromhex(obj["leaf_hash"])
                body = canonical_json(obj["entry"]).encode()
        except (ValueError, KeyError, TypeError) as exc:
            raise _TamperedError("unreadable line", expected) from exc
        if idx != expected:
            raise _TamperedError(
                f"entry index {idx} where {expected} was expected (missing, extra or reordered)", expected
            )
        yield idx, body, claimed
        expected += 1


def _csv_records(lines: Iterable[str], log: str) -> Iterator[tuple[int, bytes, bytes]]:
    """(index, entry bytes, claimed leaf hash) per row. The columns between ``leaf_hash`` and ``entry`` are
    for people, but a reader trusts what they show: each must equal what the signed entry says, exactly as
    the exporter renders it, so an edited time or action is reported like an edited entry."""
    reader = csv.reader(lines)
    header = next(reader, None)
    columns = CSV_COLUMNS.get(log, [])
    if header != ["index", "leaf_hash", *columns, "entry"]:
        raise _TamperedError("unrecognized CSV header", 0)
    width = len(header)
    for expected, row in enumerate(reader):
        try:
            if len(row) != width:
                raise ValueError
            idx = int(row[0])
            claimed = bytes.fromhex(row[1])
            body = row[-1].encode()
            entry = json.loads(body) if columns else {}
            if not isinstance(entry, dict):
                raise TypeError
        except (ValueError, TypeError) as exc:
            raise _TamperedError("unreadable row", expected) from exc
        if idx != expected:
            raise _TamperedError(
                f"entry index {idx} where {expected} was expected (missing, extra or reordered)", expected
            )
        for column, shown in zip(columns, row[2:-1], strict=True):
            if shown != cell(entry.get(column)):
                raise _TamperedError(f"the {column!r} column does not match the signed entry", expected)
        yield idx, body, claimed


def verify_export(
    path: Path | str,
    verifier_keys: str | Iterable[str],
    *,
    policy: WitnessPolicy | None = None,
    remembered: Iterable[str] = (),
) -> VerifyReport:
    """Recompute the tree of an export and check it against its signed checkpoint, offline.

    Reports the first entry whose bytes no longer match its leaf hash (or that is missing, extra or out of
    order); if only the root differs (entries and leaf hashes both rewritten), says so. With a witness
    ``policy`` the checkpoint also needs its quorum of cosignatures (quorum 0: the operator's signature
    alone, as before). Each ``remembered`` checkpoint (a signed note seen earlier, e.g. by a customer or
    an auditor) must be a prefix of the exported log: same root at its size, and no larger than the export
    (a fork or a rollback is reported as such).
    """
    keys = [verifier_keys] if isinstance(verifier_keys, str) else list(verifier_keys)
    try:
        earlier = sorted((open_checkpoint(n, keys) for n in remembered), key=lambda c: c.size)
    except CheckpointError:
        return VerifyReport(False, None, 0, 0, None, None, "a remembered checkpoint's signature does not verify")
    with open(path, encoding="utf-8", newline="") as fh:
        first = fh.readline()
        is_csv = first.startswith("# checkpoint ")
        try:
            header = json.loads(first[len("# checkpoint ") :] if is_csv else first)
            if header.get("type") != "checkpoint":
                raise ValueError
            log = str(header["log"])
            note = str(header["note"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return VerifyReport(False, None, 0, 0, None, None, "no checkpoint at the start of the export")
        try:
            cp = open_checkpoint(note, keys)
        except CheckpointError:
            return VerifyReport(False, log, 0, 0, None, None, "the checkpoint signature does not verify")
        if policy is not None:
            try:
                policy.check(note)
            except CheckpointError:
                return VerifyReport(
                    False,
                    log,
                    cp.size,
                    0,
                    cp.root_hash.hex(),
                    None,
                    f"the checkpoint lacks cosignatures from {policy.quorum} of the trusted witnesses",
                )
        earlier = [e for e in earlier if e.origin == cp.origin]
        if earlier and earlier[-1].size > cp.size:
            return VerifyReport(
                False,
                log,
                cp.size,
                0,
                cp.root_hash.hex(),
                None,
                f"rollback: a remembered checkpoint has {earlier[-1].size} entries, this export only {cp.size}",
            )
        checks = {e.size: e.root_hash for e in earlier}
        if (
            not cp.origin.endswith("/" + log)
            or header.get("size") != cp.size
            or header.get("root_hash") != cp.root_hash.hex()
        ):
            return VerifyReport(
                False,
                log,
                cp.size,
                0,
                cp.root_hash.hex(),
                None,
                "the export header does not match its signed checkpoint",
            )
        records = _csv_records(fh, log) if is_csv else _jsonl_records(fh, 0)
        stack: list[bytes] = []
        count = 0
        sha = hashlib.sha256
        try:
            for idx, body, claimed in records:
                h = sha(b"\x00" + body).digest()
                if h != claimed:
                    raise _TamperedError("entry content does not match its leaf hash", idx)
                if idx >= cp.size:
                    raise _TamperedError("entries beyond the checkpoint's size", idx)
                n = idx
                while n & 1:
                    h = sha(b"\x01" + stack.pop() + h).digest()
                    n >>= 1
                stack.append(h)
                count += 1
                if count in checks and not hmac.compare_digest(
                    merkle.RootBuilder(list(stack), count).root(), checks[count]
                ):
                    raise _TamperedError(
                        f"fork: the remembered checkpoint at size {count} is not a prefix of this log", None
                    )
        except _TamperedError as bad:
            return VerifyReport(False, log, cp.size, count, cp.root_hash.hex(), bad.index, bad.reason)
    if count != cp.size:
        return VerifyReport(
            False, log, cp.size, count, cp.root_hash.hex(), count, f"{cp.size - count} entries missing at the end"
        )
    root = merkle.RootBuilder(stack, count).root()
    if 0 in checks and checks[0] != merkle.EMPTY_ROOT:
        return VerifyReport(False, log, cp.size, count, root.hex(), None, "fork: a remembered empty log has a root")
    if not hmac.compare_digest(root, cp.root_hash):
        return VerifyReport(
            False, log, cp.size, count, cp.root_hash.hex(), None, "recomputed root does not match the signed checkpoint"
        )
    return VerifyReport(True, log, cp.size, count, root.hex())


__all__ = ["CSV_COLUMNS", "VerifyReport", "cell", "verify_export"]
