"""Data-point ledger service: bulk appends from jobs, the per-subject view, and inclusion proofs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.db import utcnow
from dataspace.errors import NotFound
from dataspace.tlog.log import InclusionProof, NewEntry, append, inclusion_proof, latest_checkpoint
from dataspace.tlog.models import TLogEntry

USAGE_LOG = "usage"
_json_str: Callable[[str], str] = json.JSONEncoder(ensure_ascii=False).encode


def entry_time(t: datetime) -> str:
    """The ``time`` of a ledger entry: ISO 8601 UTC with microseconds and a Z."""
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One use of a subject's data: the fields a job read about that subject, for which partner and purpose,
    with the decision the job produced for that subject."""

    job_id: int
    subject_id: int
    fields: tuple[str, ...]  # sorted, distinct catalog field keys
    partner: str
    purpose: str
    decision: str | None = None  # the decision id or label, never a data value

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("a usage entry names at least one field")


def fields_json(fields: Iterable[str], esc: Callable[[str], str] = _json_str) -> str:
    """The canonical JSON array of the fields of a usage entry (sorted, distinct)."""
    return "[" + ",".join(esc(f) for f in sorted(set(fields))) + "]"


def usage_entry_json(u: UsageEntry, stamp: str, esc: Callable[[str], str] = _json_str) -> str:
    """The canonical JSON of a ledger entry, rendered directly (keys in sorted order); equal to
    ``canonical_json`` of the same dict, which the tests check."""
    decision = "null" if u.decision is None else esc(u.decision)
    return (
        f'{{"decision":{decision},"fields":{fields_json(u.fields, esc)},"job_id":{int(u.job_id)},'
        f'"partner":{esc(u.partner)},"purpose":{esc(u.purpose)},"subject_id":{int(u.subject_id)},'
        f'"time":{esc(stamp)}}}'
    )


def record_usage(session: Session, entries: Iterable[UsageEntry], *, at: datetime | None = None) -> int:
    """Queue ledger entries in the caller's transaction (bulk; suitable for million-entry jobs)."""
    when = at or utcnow()
    stamp = entry_time(when)
    cache: dict[str, str] = {}

    def esc(value: str) -> str:  # jobs repeat a few partner/purpose/field/decision strings a million times
        out = cache.get(value)
        if out is None:
            out = cache[value] = _json_str(value)
        return out

    def rows() -> Iterator[NewEntry]:
        for u in entries:
            yield NewEntry(
                entry=usage_entry_json(u, stamp, esc),
                created_at=when,
                action="data.used",
                subject_id=u.subject_id,
                partner=u.partner,
            )

    return append(session, log=USAGE_LOG, entries=rows())


@dataclass(frozen=True)
class UsageRecord:
    partner: str
    purpose: str
    time: str
    decision: str | None
    job_id: int | None  # the batch job that read the data, or None for a real-time decision
    index: int | None  # None until the sequencer has placed it in the tree (then a proof is available)
    decision_id: int | None = None  # the real-time decision (``dataspace.realtime``) that read the data


@dataclass
class FieldUsage:
    field: str
    uses: list[UsageRecord] = dc_field(default_factory=list)


def usage_for_subject(session: Session, subject_id: int, *, limit: int = 5000) -> list[FieldUsage]:
    """Per field: which partner used it, for which purpose, when, with what result (newest first)."""
    rows = session.execute(
        select(TLogEntry.idx, TLogEntry.entry)
        .where(TLogEntry.log == USAGE_LOG, TLogEntry.subject_id == subject_id)
        .order_by(TLogEntry.id.desc())
        .limit(limit)
    )
    by_field: dict[str, FieldUsage] = {}
    for idx, body in rows:
        e = json.loads(body)
        use = UsageRecord(
            partner=e["partner"],
            purpose=e["purpose"],
            time=e["time"],
            decision=e.get("decision"),
            job_id=None if e.get("job_id") is None else int(e["job_id"]),
            index=idx,
            decision_id=None if e.get("decision_id") is None else int(e["decision_id"]),
        )
        for key in e["fields"]:  # one entry covers every field the job read; each field lists the use
            by_field.setdefault(key, FieldUsage(key)).uses.append(use)
    return sorted(by_field.values(), key=lambda f: f.field)


def usage_proof(session: Session, *, subject_id: int, index: int) -> tuple[InclusionProof, str]:
    """The inclusion proof of one of *this subject's* ledger entries at the latest checkpoint, with the
    signed checkpoint note; another subject's entry is reported as not found."""
    owner = session.execute(
        select(TLogEntry.subject_id).where(TLogEntry.log == USAGE_LOG, TLogEntry.idx == index)
    ).scalar_one_or_none()
    cp = latest_checkpoint(session, log=USAGE_LOG)
    if owner != subject_id or cp is None or index >= cp.size:
        raise NotFound("no such ledger entry")
    return inclusion_proof(session, log=USAGE_LOG, index=index, size=cp.size), cp.note
