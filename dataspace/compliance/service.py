"""Records of processing, the subject's access export, and erasure by crypto-shredding.

Erasure withdraws every grant (each with its signed receipt), destroys the subject's data key (the sealed
profile becomes unreadable everywhere, backups included), deletes the stored decisions about them, disables
their sign-in and revokes their tokens. Ledger and audit entries stay: they are pseudonymous (subject id only)
and are the evidence that processing was lawful. The erasure itself is logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from dataspace.agreements.models import Contract
from dataspace.audit import record_event
from dataspace.auth import tokens
from dataspace.auth.models import User
from dataspace.catalog import service as catalog
from dataspace.compliance.controller import receipt_policy
from dataspace.compliance.models import SubjectRequest
from dataspace.consents import changes
from dataspace.consents import queries as consent_queries
from dataspace.db import utcnow
from dataspace.errors import Conflict, NotFound
from dataspace.events.publish import erase_subject as erase_from_events
from dataspace.jobs.models import Decision
from dataspace.keys import KeyRing
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from dataspace.settings import Settings
from dataspace.subjects.models import Subject
from dataspace.subjects.store import shred

SAFEGUARDS = [
    "customer values encrypted per customer (AES-256-GCM envelope encryption), crypto-shredded on erasure",
    "partners receive only desensitized features: per-partner keyed pseudonyms, generalization, k-anonymity",
    "partner models run in an isolated sandbox (bubblewrap, seccomp, resource limits); raw data never leaves",
    "partners see results only as differentially private aggregates charged to a privacy budget",
    "every use recorded in a tamper-evident Merkle log with signed checkpoints",
]


def records_of_processing(
    session: Session, *, controller: dict[str, Any] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """GDPR Art. 30 records, derived from the catalog and the approved contracts; ``controller`` is the
    controller's identity as receipts show it."""
    now = now or utcnow()
    fields = {f.key: f for f in catalog.list_fields(session, include_retired=True)}
    contracts = list(session.scalars(select(Contract).order_by(Contract.id)))
    partners = {p.id: p for p in session.scalars(select(Partner))}
    records = []
    for purpose in catalog.list_purposes(session):
        used = [c for c in contracts if c.purpose_key == purpose.key and c.status == "approved"]
        field_keys = sorted({f["field"] for c in used for f in c.features if f.get("field") in fields})
        records.append(
            {
                "purpose": purpose.key,
                "purpose_label": purpose.label,
                "dpv_purpose": purpose.dpv_term,
                "description": purpose.description,
                "legal_basis": purpose.lawful_basis,
                "data_categories": sorted({fields[k].dimension_key for k in field_keys}),
                "fields": [
                    {
                        "key": k,
                        "label": fields[k].label,
                        "sensitivity": fields[k].sensitivity,
                        "retention_days": fields[k].retention_days,
                    }
                    for k in field_keys
                ],
                "special_categories": [k for k in field_keys if fields[k].sensitivity == "sensitive"],
                "recipients": sorted({partners[c.partner_id].name for c in used if c.partner_id in partners}),
                "recipient_categories": sorted(
                    {partners[c.partner_id].category for c in used if c.partner_id in partners}
                ),
                "contracts": [
                    {
                        "id": c.id,
                        "partner": partners[c.partner_id].key,
                        "valid_until": c.valid_until.isoformat(),
                        "active": c.valid_from <= now < c.valid_until,
                    }
                    for c in used
                ],
                "retention": (
                    f"up to {max(fields[k].retention_days for k in field_keys)} days"
                    if field_keys
                    else "no fields processed for this purpose"
                ),
                "international_transfers": "none: data stays in the operator's data space",
                "safeguards": SAFEGUARDS,
            }
        )
    return {"controller": controller, "generated_at": now.isoformat(), "records": records}


def _subject(session: Session, subject_id: int) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise NotFound("no such data subject")
    return subject


def log_access_request(session: Session, *, subject_id: int, actor: Principal, export_format: str) -> None:
    """Log an access request (the export itself streams: ``dataspace.compliance.export``)."""
    _subject(session, subject_id)
    _log_request(session, subject_id, "access", actor, {"format": export_format})


def erase_subject(
    settings: Settings,
    keys: KeyRing,
    session: Session,
    *,
    subject_id: int,
    actor: Principal,
    receipts: list[str] | None = None,
) -> dict[str, int]:
    """Erase the subject (see module doc). Runs in the caller's transaction: all of it or none. ``receipts``,
    if given, gets the id of each withdrawal's signed receipt (for the customer to keep)."""
    subject = _subject(session, subject_id)
    if subject.erased_at is not None:
        raise Conflict("this account has already been erased")
    withdrawn = 0
    for grant in consent_queries.list_grants(session, subject_id=subject_id):
        change = changes.withdraw(
            session,
            subject_id=subject_id,
            grant_id=grant.id,
            signer=keys.signing_key,
            actor=actor,
            policy=receipt_policy(settings),
        )
        withdrawn += int(change.changed)
        if receipts is not None and change.changed:
            receipts.append(change.receipt_id)
    result: CursorResult[Any] = session.execute(delete(Decision).where(Decision.subject_id == subject_id))  # type: ignore[assignment]
    decisions = result.rowcount or 0
    erase_from_events(session, subject_id)  # business events' stored copies
    shred(session, subject_id)
    user_ids = list(session.scalars(select(User.id).where(User.subject_id == subject_id)))
    if user_ids:
        session.execute(update(User).where(User.id.in_(user_ids)).values(disabled=True))
        tokens.revoke_user_tokens(session, user_ids)
    outcome = {"grants_withdrawn": withdrawn, "decisions_deleted": decisions, "accounts_disabled": len(user_ids)}
    _log_request(session, subject_id, "erasure", actor, outcome)
    record_event(session, actor=actor, action="subject.erased", target=f"subject:{subject_id}", details=outcome)
    return outcome


def _log_request(session: Session, subject_id: int, kind: str, actor: Principal, outcome: dict[str, Any]) -> None:
    now = utcnow()
    session.add(
        SubjectRequest(
            subject_id=subject_id,
            kind=kind,
            requested_by=actor.actor,
            requested_at=now,
            completed_at=now,
            outcome=outcome,
        )
    )
    if kind == "access":
        record_event(
            session, actor=actor, action="subject.access_exported", target=f"subject:{subject_id}", details=outcome
        )


def list_requests(session: Session, *, kind: str | None = None, limit: int = 200) -> list[SubjectRequest]:
    stmt = select(SubjectRequest).order_by(SubjectRequest.id.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(SubjectRequest.kind == kind)
    return list(session.scalars(stmt))
