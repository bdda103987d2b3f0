"""The subject's access export and erasure; records of processing and the request log for compliance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from dataspace.auth.principal import Principal
from dataspace.compliance import export, service
from dataspace.compliance.controller import receipt_policy
from dataspace.context import Context
from dataspace.errors import Forbidden, InvalidInput
from dataspace.http.deps import authorize, get_context, read_session, unit_of_work

router = APIRouter(prefix="/v1", tags=["compliance"])
CONFIRMATION = "erase my data"


def _me(principal: Principal) -> int:
    if principal.subject_id is None:
        raise Forbidden()
    return principal.subject_id


@router.get(
    "/me/export",
    response_class=StreamingResponse,
    responses={200: {"content": {export.MEDIA_TYPE: {}}, "description": "JSON Lines; see the README."}},
)
def export_my_data(
    session: Session = Depends(unit_of_work, scope="function"),
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("me.export", "read")),
) -> StreamingResponse:
    """Everything held about me (GDPR art. 15/20), streamed as JSON Lines: a header line, one line per
    record tagged with its section, and a manifest line with each section's count and SHA-256."""
    subject_id = _me(principal)
    service.log_access_request(session, subject_id=subject_id, actor=principal, export_format=export.FORMAT)
    return StreamingResponse(
        export.stream_export(ctx, subject_id),
        media_type=export.MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="my-data.jsonl"', "Cache-Control": "no-store"},
    )


@router.delete("/me")
def erase_me(
    confirm: str = Query(..., description=f"must be exactly '{CONFIRMATION}'"),
    session: Session = Depends(unit_of_work, scope="function"),
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("me.erasure", "write")),
) -> dict[str, Any]:
    """Erase my account: withdraw every consent, crypto-shred my data, disable my sign-in."""
    if confirm != CONFIRMATION:
        raise InvalidInput(f"to erase your account, confirm with '{CONFIRMATION}'")
    outcome = service.erase_subject(ctx, session, subject_id=_me(principal), actor=principal)
    return {"erased": True, **outcome}


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
