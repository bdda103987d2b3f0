"""Streamed exports of a log (JSONL or CSV, headed by the signed checkpoint); ``transparency.export``
verifies them offline (and is what partners and auditors run, without the server).

JSONL: the first line is ``{"type":"checkpoint",...,"note":"<signed note>"}``; every further line is
``{"index":i,"leaf_hash":"<hex>","entry":<canonical entry JSON>}``. CSV: ``# checkpoint <same JSON>``,
then a header row and one row per entry whose ``entry`` column holds the canonical entry JSON (the other
columns are for people, and the verifier checks each against the entry).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session

from dataspace.errors import InvalidInput
from dataspace.tlog.log import StoredCheckpoint, iter_sequenced
from transparency.canonical import canonical_json
from transparency.export import CSV_COLUMNS, cell

FORMATS = ("jsonl", "csv")


def checkpoint_header(cp: StoredCheckpoint) -> str:
    return canonical_json(
        {"type": "checkpoint", "log": cp.log, "size": cp.size, "root_hash": cp.root_hash.hex(), "note": cp.note}
    )


def export_lines(session: Session, *, cp: StoredCheckpoint, fmt: str, batch: int = 5000) -> Iterator[str]:
    """The export of ``cp.log`` up to the checkpoint's size, as text chunks (for streaming)."""
    if fmt not in FORMATS:
        raise InvalidInput("format must be jsonl or csv")
    rows = iter_sequenced(session, log=cp.log, size=cp.size)
    if fmt == "jsonl":
        yield checkpoint_header(cp) + "\n"
        buf: list[str] = []
        for idx, body, h in rows:
            buf.append(f'{{"index":{idx},"leaf_hash":"{h.hex()}","entry":{body}}}\n')
            if len(buf) >= batch:
                yield "".join(buf)
                buf = []
        if buf:
            yield "".join(buf)
        return
    cols = CSV_COLUMNS.get(cp.log, [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    out.write("# checkpoint " + checkpoint_header(cp) + "\n")
    writer.writerow(["index", "leaf_hash", *cols, "entry"])
    for n, (idx, body, h) in enumerate(rows, start=1):
        entry = json.loads(body)
        writer.writerow([idx, h.hex(), *(cell(entry.get(c)) for c in cols), body])
        if n % batch == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def write_export(session: Session, path: Path, *, cp: StoredCheckpoint, fmt: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for chunk in export_lines(session, cp=cp, fmt=fmt):
            fh.write(chunk)
