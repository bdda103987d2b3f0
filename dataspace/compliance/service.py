"""Records of processing, the subject's access export, and erasure by crypto-shredding.

Erasure withdraws every grant (each with its signed receipt), destroys the subject's data key (the sealed
profile becomes unreadable everywhere, backups included), deletes the stored decisions about them, disables
their sign-in and revokes their tokens. Ledger and audit entries stay: they are pseudonymous (subject id only)
and are the evidence that processing was lawful. The erasure itself is logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.auth import tokens
from dataspace.auth.models import User
from dataspace.auth.principal import Principal
from dataspace.catalog import service as catalog
from dataspace.compliance.controller import receipt_policy
from dataspace.compliance.models import SubjectRequest
from dataspace.consents import service as consents
from dataspace.consents.models import ConsentReceipt
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import Conflict, NotFound
from dataspace.jobs.models import Contract, Decision, Job
from dataspace.partners.models import Partner
from dataspace.points import service as points
from dataspace.subjects.models import Subject
from dataspace.subjects.store import read_profile, shred
from dataspace.usage.service import usage_for_subject
from dataspace.vault import DecryptionError

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


def subject_export(ctx: Context, session: Session, *, subject_id: int, actor: Principal) -> dict[str, Any]:
    """Everything held about the subject (GDPR Art. 15 and 20), as one JSON document."""
    subject = _subject(session, subject_id)
    now = utcnow()
    try:
        values = read_profile(session, ctx.vault, subject_id)
    except (NotFound, DecryptionError):
        values = {}
    fields = {f.key: f for f in catalog.list_fields(session, include_retired=True)}
    profile = [
        {
            "field": k,
            "label": fields[k].label if k in fields else k,
            "value": v,
            "storage_location": fields[k].storage_location if k in fields else None,
        }
        for k, v in sorted(values.items())
    ]
    grants = consents.list_grants(session, subject_id=subject_id, include_ended=True)
    receipts = list(
        session.scalars(
            select(ConsentReceipt).where(ConsentReceipt.subject_id == subject_id).order_by(ConsentReceipt.created_at)
        )
    )
    decisions = session.execute(
        select(Decision.job_id, Decision.label, Decision.value, Job.finished_at, Contract.purpose_key, Partner.key)
        .join(Job, Job.id == Decision.job_id)
        .join(Contract, Contract.id == Job.contract_id)
        .join(Partner, Partner.id == Job.partner_id)
        .where(Decision.subject_id == subject_id)
        .order_by(Decision.job_id)
    ).all()
    summary = points.get_summary(session, subject_id=subject_id, now=now)
    postings = points.list_postings(session, subject_id=subject_id, limit=200)
    doc = {
        "subject": {
            "id": subject.id,
            "created_at": subject.created_at.isoformat(),
            "erased_at": subject.erased_at.isoformat() if subject.erased_at else None,
        },
        "profile": profile,
        "consents": [_grant_json(g, now) for g in grants],
        "receipts": [orjson.loads(r.body) for r in receipts],
        "usage": [
            {"field": u.field, "uses": [vars(x) for x in u.uses]} for u in usage_for_subject(session, subject_id)
        ],
        "automated_decisions": [
            {
                "job_id": d[0],
                "decision": d[1] if d[1] is not None else d[2],
                "at": d[3].isoformat() if d[3] else None,
                "purpose": d[4],
                "partner": d[5],
            }
            for d in decisions
        ],
        "points": {
            "summary": summary.model_dump(mode="json"),
            "postings": postings.model_dump(mode="json"),
            "redemptions": [r.model_dump(mode="json") for r in points.list_redemptions(session, subject_id=subject_id)],
        },
        "generated_at": now.isoformat(),
    }
    _log_request(session, subject_id, "access", actor, {"fields": len(profile), "grants": len(grants)})
    return doc


def _grant_json(g: Any, now: datetime) -> dict[str, Any]:
    return {
        "id": g.id,
        "field": g.field_key,
        "dimension": g.dimension_key,
        "purpose": g.purpose_key,
        "partner": g.partner_key,
        "partner_category": g.partner_category,
        "granularity": g.granularity,
        "state": consents.current_state(g, now),
        "valid_from": g.valid_from.isoformat(),
        "valid_until": g.valid_until.isoformat() if g.valid_until else None,
    }


def erase_subject(ctx: Context, session: Session, *, subject_id: int, actor: Principal) -> dict[str, int]:
    """Erase the subject (see module doc). Runs in the caller's transaction: all of it or none."""
    subject = _subject(session, subject_id)
    if subject.erased_at is not None:
        raise Conflict("this account has already been erased")
    withdrawn = 0
    for grant in consents.list_grants(session, subject_id=subject_id):
        change = consents.withdraw(
            session,
            subject_id=subject_id,
            grant_id=grant.id,
            signer=ctx.keys.signing_key,
            actor=actor,
            policy=receipt_policy(ctx.settings),
        )
        withdrawn += int(change.changed)
    result: CursorResult[Any] = session.execute(delete(Decision).where(Decision.subject_id == subject_id))  # type: ignore[assignment]
    decisions = result.rowcount or 0
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
