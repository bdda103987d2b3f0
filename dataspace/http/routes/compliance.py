"""The subject's access export and erasure; records of processing and the request log for compliance."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.compliance import export, service
from dataspace.compliance.controller import receipt_policy
from dataspace.compliance.models import SubjectRequest
from dataspace.context import Context
from dataspace.errors import InvalidInput, NotFound
from dataspace.grants.models import ConsentReceipt
from dataspace.http.deps import WriteSession, authorize, get_context, read_session, subject_of
from dataspace.principal import Principal
from dataspace.subjects.models import SubjectProfile
from dataspace.subjects.store import read_profile
from dataspace.vault import DecryptionError

router = APIRouter(prefix="/v1", tags=["compliance"])
CONFIRMATION = "erase my data"


@router.get(
    "/me/export",
    response_class=StreamingResponse,
    responses={200: {"content": {export.MEDIA_TYPE: {}}, "description": "JSON Lines; see the README."}},
)
def export_my_data(
    session: WriteSession,
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("me.export", "read")),
) -> StreamingResponse:
    """Everything held about me (GDPR art. 15/20), streamed as JSON Lines: a header line, one line per
    record tagged with its section, and a manifest line with each section's count and SHA-256."""
    subject_id = subject_of(principal)
    service.log_access_request(session, subject_id=subject_id, actor=principal, export_format=export.FORMAT)
    return StreamingResponse(
        export.stream_export(ctx.settings, ctx.db, ctx.vault, subject_id),
        media_type=export.MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="my-data.jsonl"', "Cache-Control": "no-store"},
    )


class HeldValue(BaseModel):
    field: str
    value: Any


class ProfileRead(BaseModel):
    """The values the operator holds about the signed-in customer, decrypted for them alone."""

    values: list[HeldValue]
    updated_at: datetime | None = Field(description="When these values last changed; null if none are held.")


@router.get("/me/profile", response_model=ProfileRead)
def my_profile(
    session: Session = Depends(read_session),
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("me.export", "read")),
) -> ProfileRead:
    """What we hold about me: my own values, field by field (the same values the export carries)."""
    subject_id = subject_of(principal)
    try:
        values = read_profile(session, ctx.vault, subject_id)
    except (NotFound, DecryptionError):  # erased (shredded) or never ingested: nothing is held
        return ProfileRead(values=[], updated_at=None)
    updated = session.scalar(select(SubjectProfile.updated_at).where(SubjectProfile.subject_id == subject_id))
    return ProfileRead(values=[HeldValue(field=k, value=v) for k, v in sorted(values.items())], updated_at=updated)


@router.delete("/me")
def erase_me(
    *,
    confirm: str = Query(..., description=f"must be exactly '{CONFIRMATION}'"),
    session: WriteSession,
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("me.erasure", "write")),
) -> dict[str, Any]:
    """Erase my account: withdraw every consent, crypto-shred my data, disable my sign-in."""
    if confirm != CONFIRMATION:
        raise InvalidInput(f"to erase your account, confirm with '{CONFIRMATION}'")
    subject_id = subject_of(principal)
    receipts: list[str] = []
    outcome = service.erase_subject(
        ctx.settings, ctx.keys, session, subject_id=subject_id, actor=principal, receipts=receipts
    )
    request = session.scalars(
        select(SubjectRequest)
        .where(SubjectRequest.subject_id == subject_id, SubjectRequest.kind == "erasure")
        .order_by(SubjectRequest.id.desc())
    ).first()
    # The customer's sign-in ends with the erasure: hand back what they need to prove it happened, the
    # request's reference and the signed receipt of every withdrawal (their only copy from now on).
    rows = session.execute(select(ConsentReceipt.id, ConsentReceipt.body).where(ConsentReceipt.id.in_(receipts)))
    bodies: dict[str, str] = dict(rows.all())
    return {
        "erased": True,
        **outcome,
        "reference": f"ER-{request.id:06d}" if request is not None else None,
        "completed_at": request.completed_at.isoformat() if request is not None and request.completed_at else None,
        "receipts": [{"id": r, "receipt": json.loads(bodies[r])} for r in receipts if r in bodies],
    }


@router.get("/compliance/records-of-processing")
def records(
    session: Session = Depends(read_session),
    ctx: Context = Depends(get_context),
    _: Principal = Depends(authorize("compliance.records", "read")),
) -> dict[str, Any]:
    controller = receipt_policy(ctx.settings).controller.as_json()
    return service.records_of_processing(session, controller=controller)


@router.get("/compliance/requests")
def requests(
    kind: str | None = Query(None, pattern="^(access|erasure)$"),
    session: Session = Depends(read_session),
    _: Principal = Depends(authorize("compliance.requests", "read")),
) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "subject_id": r.subject_id,
            "kind": r.kind,
            "requested_by": r.requested_by,
            "requested_at": r.requested_at.isoformat(),
            "completed_at": r.completed_at.isoformat() if r.completed_at else None,
            "outcome": r.outcome,
        }
        for r in service.list_requests(session, kind=kind)
    ]
