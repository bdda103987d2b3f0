"""Compliance: audit search, streamed signed exports, checkpoints, inclusion and consistency proofs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.audit.search import list_actions, search_events
from dataspace.context import Context
from dataspace.errors import InvalidInput, NotFound
from dataspace.http.deps import WriteSession, authorize, get_context, read_session
from dataspace.http.params import MAX_INDEX, SubjectFilter
from dataspace.principal import Principal
from dataspace.tlog import cosigning
from dataspace.tlog import export as tlog_export
from dataspace.tlog import log as tlog
from dataspace.tlog.models import TLogEntry

router = APIRouter(prefix="/v1/audit", tags=["audit"])

LOG_PATTERN = "^(audit|usage)$"
# Filter values have a shape; one that does not fit is a 422, never a filter silently matching nothing.
ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$"  # consent.grant, or a prefix: consent.*
ACTOR_PATTERN = r"^(anonymous|[a-z_]+:\S{1,190})$"  # role:name, as entries name their actor
PARTNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
EVENT_FILTERS = frozenset({"since", "until", "subject_id", "partner", "action", "actor", "log", "cursor", "limit"})


def _aware(t: datetime | None) -> datetime | None:
    if t is not None and t.tzinfo is None:
        raise InvalidInput("times need a timezone (e.g. 2024-01-01T00:00:00Z)")
    return t


@router.get("/events")
def events(
    *,
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    subject_id: SubjectFilter = None,
    partner: str | None = Query(None, max_length=64, pattern=PARTNER_PATTERN),
    action: str | None = Query(
        None, max_length=64, pattern=ACTION_PATTERN, description="An action, or a prefix ending in .* (consent.*)."
    ),
    actor: str | None = Query(None, max_length=200, pattern=ACTOR_PATTERN, description="role:name, or anonymous."),
    log: str = Query("audit", pattern=LOG_PATTERN),
    cursor: str | None = Query(None, pattern="^[0-9]{1,18}$", description="The next_cursor of the previous page."),
    limit: int = Query(100, ge=1, le=500),
    principal: Principal = Depends(authorize("audit", "read")),
    session: Session = Depends(read_session),
) -> dict[str, Any]:
    unknown = sorted(set(request.query_params) - EVENT_FILTERS)
    if unknown:
        raise InvalidInput(f"unknown filter {unknown[0]!r}; filters: {', '.join(sorted(EVENT_FILTERS))}")
    since, until = _aware(since), _aware(until)
    if since is not None and until is not None and since >= until:
        raise InvalidInput("'since' must be before 'until'")
    page = search_events(
        session,
        log=log,
        since=since,
        until=until,
        subject_id=subject_id,
        partner=partner,
        action=action,
        actor=actor,
        cursor=cursor,
        limit=limit,
    )
    return {
        "items": [{"id": e.id, "index": e.index, **e.entry} for e in page.items],
        "next_cursor": page.next_cursor,
    }


@router.get("/actions")
def actions(
    log: str = Query("audit", pattern=LOG_PATTERN),
    principal: Principal = Depends(authorize("audit", "read")),
    session: Session = Depends(read_session),
) -> dict[str, Any]:
    """The actions recorded in the log so far: the values the ``action`` filter can match."""
    return {"log": log, "actions": list_actions(session, log=log)}


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The log up to its latest checkpoint: JSON Lines (a checkpoint header first) or CSV.",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
def export(
    *,
    request: Request,
    format: str = Query("jsonl", pattern="^(jsonl|csv)$"),
    log: str = Query("audit", pattern=LOG_PATTERN),
    principal: Principal = Depends(authorize("audit", "read")),
    ctx: Context = Depends(get_context),
    session: WriteSession,
) -> StreamingResponse:
    tlog.sequence(ctx.settings, ctx.db, ctx.keys, log)
    cp = tlog.latest_checkpoint(session, log=log)
    record_event(
        session,
        actor=principal,
        action="audit.export",
        target=f"log:{log}",
        request_id=getattr(request.state, "request_id", None),
        details={"format": format, "size": cp.size if cp else 0},
    )
    if cp is None:
        raise NotFound(f"the {log} log is empty")

    def body() -> Iterator[str]:
        # Its own session: the stream outlives the request's dependencies.
        with ctx.db.session() as s:
            yield from tlog_export.export_lines(s, cp=cp, fmt=format)

    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    name = f"{log}-{cp.size}.{format}"
    return StreamingResponse(
        body(), media_type=media, headers={"content-disposition": f'attachment; filename="{name}"'}
    )


@router.get("/checkpoint")
def checkpoint(
    log: str = Query("audit", pattern=LOG_PATTERN),
    principal: Principal = Depends(authorize("audit.checkpoint", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    tlog.sequence(ctx.settings, ctx.db, ctx.keys, log)
    witnessing = cosigning.witnessing(ctx.settings)  # reads only: witnesses are contacted in the background
    with ctx.db.session() as session:
        cp = tlog.latest_checkpoint(session, log=log)
    if cp is None:
        raise NotFound(f"the {log} log is empty")
    return {
        "log": log,
        "size": cp.size,
        "root_hash": cp.root_hash.hex(),
        "note": cp.note,
        "verifier_keys": tlog.verifier_keys(ctx.settings, ctx.keys),
        **witnessing,
    }


@router.get("/proofs/inclusion")
def inclusion(
    index: int = Query(..., ge=0, le=MAX_INDEX),
    tree_size: int = Query(..., ge=1, le=MAX_INDEX),
    log: str = Query("audit", pattern=LOG_PATTERN),
    principal: Principal = Depends(authorize("audit", "read")),
    session: Session = Depends(read_session),
) -> dict[str, Any]:
    p = tlog.inclusion_proof(session, log=log, index=index, size=tree_size)
    # The entry's exact bytes (canonical JSON), so a verifier hashes what was signed, not a re-encoding.
    entry = session.scalar(select(TLogEntry.entry).where(TLogEntry.log == log, TLogEntry.idx == index))
    return {
        "log": log,
        "index": index,
        "tree_size": tree_size,
        "leaf_hash": p.leaf_hash.hex(),
        "hashes": [h.hex() for h in p.hashes],
        "entry": entry,
    }


@router.get("/proofs/consistency")
def consistency(
    first: int = Query(..., ge=0, le=MAX_INDEX),
    second: int = Query(..., ge=0, le=MAX_INDEX),
    log: str = Query("audit", pattern=LOG_PATTERN),
    principal: Principal = Depends(authorize("audit", "read")),
    session: Session = Depends(read_session),
) -> dict[str, Any]:
    p = tlog.consistency_proof(session, log=log, first=first, second=second)
    return {"log": log, "first": first, "second": second, "hashes": [h.hex() for h in p.hashes]}
