"""The customer's view of the usage log's consistency: its latest checkpoint (with witness cosignatures)
and consistency proofs between two sizes, so a client that remembers an earlier checkpoint can check
the log it sees now extends it (no one was shown a different log, nothing was rewritten)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from dataspace.auth.principal import Principal
from dataspace.context import Context
from dataspace.errors import NotFound
from dataspace.http.deps import authorize, get_context
from dataspace.http.params import MAX_INDEX
from dataspace.tlog import cosigning
from dataspace.tlog import log as tlog

router = APIRouter(prefix="/v1/me/usage", tags=["usage"])


@router.get("/checkpoint")
def usage_checkpoint(
    principal: Principal = Depends(authorize("me.usage", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    tlog.sequence(ctx, "usage")
    witnessing = cosigning.publish(ctx, "usage")
    with ctx.db.session() as session:
        cp = tlog.latest_checkpoint(session, log="usage")
    if cp is None:
        raise NotFound("the usage log is empty")
    return {
        "log": "usage",
        "size": cp.size,
        "root_hash": cp.root_hash.hex(),
        "note": cp.note,
        "verifier_keys": tlog.verifier_keys(ctx),
        **witnessing,
    }


@router.get("/consistency")
def usage_consistency(
    first: int = Query(..., ge=0, le=MAX_INDEX),
    second: int = Query(..., ge=0, le=MAX_INDEX),
    principal: Principal = Depends(authorize("me.usage", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    with ctx.db.session() as session:
        p = tlog.consistency_proof(session, log="usage", first=first, second=second)
    return {"log": "usage", "first": first, "second": second, "hashes": [h.hex() for h in p.hashes]}
