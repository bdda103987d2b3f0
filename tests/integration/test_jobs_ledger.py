"""The jobs' bulk ledger writer produces exactly the rows ``dataspace.usage.record_usage`` would."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.jobs.ledger import append_job_usage
from dataspace.tlog.models import TLogEntry
from dataspace.usage import UsageEntry, record_usage

COLS = (
    TLogEntry.log,
    TLogEntry.idx,
    TLogEntry.entry,
    TLogEntry.leaf_hash,
    TLogEntry.created_at,
    TLogEntry.action,
    TLogEntry.actor,
    TLogEntry.subject_id,
    TLogEntry.partner,
)


def rows(ctx: Context) -> list[tuple[object, ...]]:
    with ctx.db.session() as s:
        return [tuple(r) for r in s.execute(select(*COLS).order_by(TLogEntry.id)).all()]


# Each example deletes the log rows it wrote first, so sharing the fixture between examples is safe.
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subjects=st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=20, unique=True),
    fields=st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), min_size=1, max_size=4, unique=True),
    texts=st.lists(st.one_of(st.none(), st.text(min_size=1, max_size=12)), min_size=1, max_size=3),
    purpose=st.from_regex(r"[a-z][a-z_]{0,20}", fullmatch=True),
    data=st.data(),
)
def test_bulk_rows_equal_record_usage(
    ctx: Context, subjects: list[int], fields: list[str], texts: list[str | None], purpose: str, data: st.DataObject
) -> None:
    codes = [data.draw(st.integers(0, len(texts) - 1)) for _ in subjects]
    at = utcnow()
    with ctx.db.transaction() as s:
        s.execute(delete(TLogEntry))
        record_usage(
            s,
            [
                UsageEntry(
                    job_id=42, subject_id=sid, fields=tuple(fields), partner="p-1", purpose=purpose, decision=texts[c]
                )
                for sid, c in zip(subjects, codes, strict=True)
            ],
            at=at,
        )
    expected = rows(ctx)
    with ctx.db.transaction() as s:
        s.execute(delete(TLogEntry))
        n = append_job_usage(
            s,
            job_id=42,
            partner="p-1",
            purpose=purpose,
            fields=fields,
            subject_ids=np.array(subjects, dtype=np.int64),
            decision_codes=np.array(codes),
            decision_texts=texts,
            at=at,
        )
    assert n == len(subjects)
    assert rows(ctx) == expected
