"""The customer's view of the usage log's consistency: its latest checkpoint (with witness cosignatures)
and consistency proofs between two sizes, so a client that remembers an earlier checkpoint can check
the log it sees now extends it (no one was shown a different log, nothing was rewritten)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query

from dataspace.context import Context
from dataspace.errors import InvalidInput, NotFound
from dataspace.http.deps import authorize, get_context
from dataspace.http.params import MAX_INDEX
from dataspace.principal import Principal
from dataspace.tlog import cosigning
from dataspace.tlog import log as tlog
from transparency.note import CheckpointError, open_checkpoint

router = APIRouter(tags=["transparency"])


@router.get("/v1/me/usage/checkpoint")
def usage_checkpoint(
    principal: Principal = Depends(authorize("me.usage", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    tlog.sequence(ctx.settings, ctx.db, ctx.keys, "usage")
    witnessing = cosigning.witnessing(ctx.settings)  # reads only: witnesses are contacted in the background
    with ctx.db.session() as session:
        cp = tlog.latest_checkpoint(session, log="usage")
    if cp is None:
        raise NotFound("the usage log is empty")
    return {
        "log": "usage",
        "size": cp.size,
        "root_hash": cp.root_hash.hex(),
        "note": cp.note,
        "verifier_keys": tlog.verifier_keys(ctx.settings, ctx.keys),
        **witnessing,
    }


@router.get("/v1/me/usage/consistency")
def usage_consistency(
    first: int = Query(..., ge=0, le=MAX_INDEX),
    second: int = Query(..., ge=0, le=MAX_INDEX),
    principal: Principal = Depends(authorize("me.usage", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    with ctx.db.session() as session:
        p = tlog.consistency_proof(session, log="usage", first=first, second=second)
    return {"log": "usage", "first": first, "second": second, "hashes": [h.hex() for h in p.hashes]}


@router.post("/v1/audit/checkpoints/check")
def check_checkpoint(
    note: str = Body(..., media_type="text/plain", max_length=16_384, description="A signed checkpoint (note)."),
    principal: Principal = Depends(authorize("audit", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    """Gossip for the compliance console: is a checkpoint someone was shown (a customer's download, an
    auditor's copy) part of this log? ``consistent``: the log has that root at that size; ``split-view``:
    the operator's key signed another tree at that size; ``ahead``: the log is now shorter (a rollback)."""
    try:
        cp = open_checkpoint(note, tlog.verifier_keys(ctx.settings, ctx.keys))
    except CheckpointError:
        raise InvalidInput("not a checkpoint signed by this server's keys") from None
    log = cp.origin.rsplit("/", 1)[-1]
    if log not in tlog.LOGS or cp.origin != tlog.origin_for(ctx.settings.resolved_issuer, log):
        raise InvalidInput("not a checkpoint of this server's logs")
    tlog.sequence(ctx.settings, ctx.db, ctx.keys, log)
    with ctx.db.session() as session:
        size = tlog.tree_size(session, log=log)
        if cp.size > size:
            verdict = "ahead"
        else:
            verdict = "consistent" if tlog.root_at(session, log=log, size=cp.size) == cp.root_hash else "split-view"
        current = tlog.latest_checkpoint(session, log=log)
    return {"log": log, "size": cp.size, "verdict": verdict, "current": current.note if current else None}
