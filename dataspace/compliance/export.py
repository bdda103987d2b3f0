"""The data subject's access export (GDPR art. 15 and 20, PIPL art. 45): all of it, at any account size.

Format: JSON Lines (``application/x-ndjson``), one JSON object per line, ``{"section": S, "record": R}``:

- the first line is section ``header``: the format (``dataspace-export/2``), the subject, the time, the
  controller and the order of the sections that follow;
- then every record of each section in ``SECTIONS`` order (a section with no records has no lines);
- the last line is section ``manifest``: ``counts`` (records per section) and ``sha256`` (hex SHA-256 of
  the exact bytes of that section's lines, newlines included), so a reader can check that nothing is
  missing or altered in transit. A download without its manifest line was cut off
  (``clients.sdk.read_access_export`` checks all of this).

The records are read in one read transaction (on PostgreSQL REPEATABLE READ: one snapshot for the whole
export) in keyset chunks of ``CHUNK`` rows and written as they are read, so the server's memory does not
grow with the account (only one chunk is held at a time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.agreements.models import Contract
from dataspace.catalog import service as catalog
from dataspace.compliance.controller import controller_of
from dataspace.compliance.models import SubjectRequest
from dataspace.db import Database, utcnow
from dataspace.errors import NotFound
from dataspace.grants.convert import current_state
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.jobs.models import Decision, Job
from dataspace.linkage.service import links_of as linkage_links_of
from dataspace.partners.models import Partner
from dataspace.points import queries as points_queries
from dataspace.points.models import PointsAccount, PointsPosting, PointsTransaction, Redemption
from dataspace.settings import Settings
from dataspace.subjects.models import Subject
from dataspace.subjects.store import read_profile
from dataspace.tlog.models import TLogEntry
from dataspace.usage.service import USAGE_LOG
from dataspace.vault import DecryptionError, Vault

FORMAT = "dataspace-export/2"
MEDIA_TYPE = "application/x-ndjson"
CHUNK = 1000
SECTIONS = (
    "profile",
    "consents",
    "consent_events",
    "receipts",
    "usage",
    "automated_decisions",
    "points_summary",
    "points_postings",
    "redemptions",
    "requests",
    "partner_links",
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _keyset(session: Session, stmt: Any, key: Any, record: Callable[[Any], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every row of ``stmt`` in ascending ``key`` order, ``CHUNK`` rows per statement."""
    last: Any = None
    while True:
        page = stmt.order_by(key).limit(CHUNK)
        if last is not None:
            page = page.where(key > last)
        rows = session.execute(page).all()
        for row in rows:
            yield record(row)
        if len(rows) < CHUNK:
            return
        last = rows[-1][0]


def _profile(vault: Vault, session: Session, subject_id: int) -> Iterator[dict[str, Any]]:
    try:
        values = read_profile(session, vault, subject_id)
    except (NotFound, DecryptionError):
        values = {}
    fields = {f.key: f for f in catalog.list_fields(session, include_retired=True)}
    for k, v in sorted(values.items()):
        f = fields.get(k)
        yield {
            "field": k,
            "label": f.label if f else k,
            "value": v,
            "storage_location": f.storage_location if f else None,
            "collection": f.collection_purpose if f else None,
        }


def _sections(vault: Vault, session: Session, subject_id: int, now: datetime) -> Iterator[tuple[str, Iterable[Any]]]:
    sid = subject_id
    yield "profile", _profile(vault, session, sid)

    def grant(row: Any) -> dict[str, Any]:
        g = row[1]
        return {
            "id": g.id,
            "field": g.field_key,
            "dimension": g.dimension_key,
            "purpose": g.purpose_key,
            "partner": g.partner_key,
            "partner_category": g.partner_category,
            "granularity": g.granularity,
            "state": current_state(g, now),  # as of now, not as of the last expiry sweep
            "valid_from": _iso(g.valid_from),
            "valid_until": _iso(g.valid_until),
            "withdrawn_at": _iso(g.withdrawn_at),
            "created_at": _iso(g.created_at),
        }

    yield (
        "consents",
        _keyset(
            session, select(ConsentGrant.id, ConsentGrant).where(ConsentGrant.subject_id == sid), ConsentGrant.id, grant
        ),
    )
    yield (
        "consent_events",
        _keyset(
            session,
            select(
                ConsentEvent.id,
                ConsentEvent.grant_id,
                ConsentEvent.kind,
                ConsentEvent.state,
                ConsentEvent.at,
                ConsentEvent.valid_from,
                ConsentEvent.valid_until,
                ConsentEvent.granularity,
                ConsentEvent.actor,
                ConsentEvent.receipt_id,
            ).where(ConsentEvent.subject_id == sid),
            ConsentEvent.id,
            lambda r: {
                "id": r[0],
                "grant_id": r[1],
                "kind": r[2],
                "state": r[3],
                "at": _iso(r[4]),
                "valid_from": _iso(r[5]),
                "valid_until": _iso(r[6]),
                "granularity": r[7],
                "actor": r[8],
                "receipt_id": r[9],
            },
        ),
    )
    # The signed receipt exactly as stored (verifiable offline with the keys at /v1/keys/receipts).
    yield (
        "receipts",
        _keyset(
            session,
            select(ConsentReceipt.id, ConsentReceipt.body).where(ConsentReceipt.subject_id == sid),
            ConsentReceipt.id,
            lambda r: orjson.loads(r[1]),
        ),
    )

    def use(r: Any) -> dict[str, Any]:
        entry = json.loads(r[2])
        return {
            "index": r[1],
            "time": entry["time"],
            "fields": entry["fields"],
            "partner": entry["partner"],
            "purpose": entry["purpose"],
            "job_id": entry.get("job_id"),
            "decision_id": entry.get("decision_id"),
            "decision": entry.get("decision"),
        }

    yield (
        "usage",
        _keyset(
            session,
            select(TLogEntry.id, TLogEntry.idx, TLogEntry.entry).where(
                TLogEntry.log == USAGE_LOG, TLogEntry.subject_id == sid
            ),
            TLogEntry.id,
            use,
        ),
    )
    yield (
        "automated_decisions",
        _keyset(
            session,
            select(Decision.job_id, Decision.label, Decision.value, Job.finished_at, Contract.purpose_key, Partner.key)
            .join(Job, Job.id == Decision.job_id)
            .join(Contract, Contract.id == Job.contract_id)
            .join(Partner, Partner.id == Job.partner_id)
            .where(Decision.subject_id == sid),
            Decision.job_id,
            lambda d: {
                "job_id": d[0],
                "decision": d[1] if d[1] is not None else d[2],
                "at": _iso(d[3]),
                "purpose": d[4],
                "partner": d[5],
            },
        ),
    )
    yield "points_summary", [points_queries.get_summary(session, subject_id=sid, now=now).model_dump(mode="json")]
    account_id = session.scalar(select(PointsAccount.id).where(PointsAccount.subject_id == sid))
    yield (
        "points_postings",
        _keyset(
            session,
            select(
                PointsPosting.id,
                PointsPosting.transaction_id,
                PointsTransaction.kind,
                PointsPosting.amount,
                PointsTransaction.reason,
                PointsTransaction.reference,
                PointsPosting.created_at,
            )
            .join(PointsTransaction, PointsTransaction.id == PointsPosting.transaction_id)
            .where(PointsPosting.account_id == (account_id if account_id is not None else -1)),
            PointsPosting.id,
            lambda p: {
                "id": p[0],
                "transaction_id": p[1],
                "kind": p[2],
                "amount": p[3],
                "reason": p[4],
                "reference": p[5],
                "created_at": _iso(p[6]),
            },
        ),
    )
    yield (
        "redemptions",
        _keyset(
            session,
            select(Redemption.id, Redemption.response).where(Redemption.subject_id == sid),
            Redemption.id,
            lambda r: dict(r[1]),
        ),
    )
    yield (
        "requests",
        _keyset(
            session,
            select(
                SubjectRequest.id,
                SubjectRequest.kind,
                SubjectRequest.requested_by,
                SubjectRequest.requested_at,
                SubjectRequest.completed_at,
            ).where(SubjectRequest.subject_id == sid),
            SubjectRequest.id,
            lambda r: {
                "id": r[0],
                "kind": r[1],
                "requested_by": r[2],
                "requested_at": _iso(r[3]),
                "completed_at": _iso(r[4]),
            },
        ),
    )
    # Which partners linked their own records about the subject (a linkage grant), and on what.
    yield "partner_links", linkage_links_of(session, subject_id=sid)


def _line(section: str, record: Any) -> bytes:
    return orjson.dumps({"section": section, "record": record}) + b"\n"


def check_subject(session: Session, subject_id: int) -> None:
    if session.get(Subject, subject_id) is None:
        raise NotFound("no such data subject")


def stream_export(
    settings: Settings, db: Database, vault: Vault, subject_id: int, *, batch_bytes: int = 64 * 1024
) -> Iterator[bytes]:
    """The export as chunks of JSON Lines (see module doc), read in one snapshot and sent as read."""
    with db.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        subject = session.get(Subject, subject_id)
        if subject is None:
            raise NotFound("no such data subject")
        now = utcnow()
        header = {
            "format": FORMAT,
            "generated_at": now.isoformat(),
            "subject": {
                "id": subject.id,
                "created_at": _iso(subject.created_at),
                "erased_at": _iso(subject.erased_at),
            },
            "controller": controller_of(settings).party.as_json(),
            "sections": list(SECTIONS),
        }
        yield _line("header", header)
        counts: dict[str, int] = {}
        digests: dict[str, str] = {}
        buffer = bytearray()
        for name, records in _sections(vault, session, subject_id, now):
            digest, count = hashlib.sha256(), 0
            for record in records:
                line = _line(name, record)
                digest.update(line)
                count += 1
                buffer += line
                if len(buffer) >= batch_bytes:
                    yield bytes(buffer)
                    buffer.clear()
            counts[name], digests[name] = count, digest.hexdigest()
        buffer += _line("manifest", {"counts": counts, "sha256": digests})
        yield bytes(buffer)
