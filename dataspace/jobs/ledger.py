"""Bulk data-point ledger appends for jobs (an adapter over ``dataspace.usage``/``dataspace.tlog``).

``dataspace.usage.record_usage`` encodes each entry through ``UsageEntry`` objects and the generic log
appender; a million-subject job appends a million entries, so this writes the *same* rows (same canonical
JSON, same leaf hash, same search columns; a test checks equality with ``record_usage``) by formatting the
one varying part of each entry (the subject id) into precomputed text and inserting through
``dataspace.db.bulk_insert`` (COPY / executemany).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from dataspace.db import bulk_datetime, bulk_insert
from dataspace.usage import USAGE_LOG
from dataspace.usage.service import entry_time, fields_json
from transparency.canonical import canonical_json

_COLUMNS = ("log", "idx", "entry", "leaf_hash", "created_at", "action", "actor", "subject_id", "partner")
_CHUNK = 200_000


def append_job_usage(
    session: Session,
    *,
    job_id: int,
    partner: str,
    purpose: str,
    fields: Sequence[str],
    subject_ids: npt.NDArray[np.int64],
    decision_codes: npt.NDArray[np.int64],
    decision_texts: Sequence[str | None],
    at: datetime,
) -> int:
    """One ``data.used`` entry per subject, naming every field the job read and carrying the subject's
    decision; returns how many. ``decision_codes[i]`` indexes ``decision_texts`` for ``subject_ids[i]``."""
    enc = canonical_json
    stamp = enc(entry_time(at))
    partner_col = partner[:64]
    names = fields_json(fields, enc)
    # Keys sorted as canonical JSON sorts them: decision, fields, job_id, partner, purpose, subject_id, time.
    prefixes = [
        f'{{"decision":{enc(d)},"fields":{names},"job_id":{int(job_id)},"partner":{enc(partner)},'
        f'"purpose":{enc(purpose)},"subject_id":'
        for d in decision_texts
    ]
    suffix = f',"time":{stamp}}}'
    sha = hashlib.sha256
    when = bulk_datetime(session, at)
    count = 0
    ids = subject_ids.tolist()
    codes = decision_codes.tolist()
    for start in range(0, len(ids), _CHUNK):
        rows: list[tuple[object, ...]] = []
        for sid, code in zip(ids[start : start + _CHUNK], codes[start : start + _CHUNK], strict=True):
            body = f"{prefixes[code]}{sid}{suffix}"
            rows.append(
                (USAGE_LOG, None, body, sha(b"\x00" + body.encode()).digest(), when, "data.used", "", sid, partner_col)
            )
        bulk_insert(session, "tlog_entries", _COLUMNS, rows)
        count += len(rows)
    return count
