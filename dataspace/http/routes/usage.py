"""The customer's data-point ledger: how my data was used, with inclusion proofs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from dataspace.context import Context
from dataspace.http.deps import current_subject, get_context
from dataspace.http.params import LogIndex
from dataspace.tlog.log import sequence, verifier_keys
from dataspace.usage import usage_for_subject, usage_proof
from dataspace.usage.schemas import UsageProofRead, UsageRead

router = APIRouter(prefix="/v1/me/usage", tags=["usage"])


def _usage(ctx: Context, subject_id: int) -> dict[str, Any]:
    with ctx.db.session() as session:
        fields = usage_for_subject(session, subject_id)
    return {
        "fields": [
            {
                "field": f.field,
                "uses": [
                    {
                        "partner": u.partner,
                        "purpose": u.purpose,
                        "time": u.time,
                        "result": u.decision,
                        "job_id": u.job_id,
                        "decision_id": u.decision_id,
                        "index": u.index,
                    }
                    for u in f.uses
                ],
            }
            for f in fields
        ]
    }


# async, with its blocking part in one worker-thread call: a plain ``def`` route with a session dependency
# hops to a worker thread three times (open the session, run, close it).
@router.get("", response_model=UsageRead)
async def my_usage(
    subject_id: int = Depends(current_subject("me.usage", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    return await run_in_threadpool(_usage, ctx, subject_id)


@router.get("/{index}/proof", response_model=UsageProofRead)
def my_usage_proof(
    index: LogIndex,
    subject_id: int = Depends(current_subject("me.usage", "read")),
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    sequence(ctx.settings, ctx.db, ctx.keys, "usage")
    with ctx.db.session() as session:
        proof, note = usage_proof(session, subject_id=subject_id, index=index)
    return {
        "log": "usage",
        "index": index,
        "tree_size": proof.tree_size,
        "leaf_hash": proof.leaf_hash.hex(),
        "hashes": [h.hex() for h in proof.hashes],
        "checkpoint": note,
        "verifier_keys": verifier_keys(ctx.settings, ctx.keys),
    }
