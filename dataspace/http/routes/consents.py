"""Consent routes: the customer's matrix, toggles, history and receipts; steward statistics; the public
receipt-signing keys. Thin: the service does the work, ownership included."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AwareDatetime
from sqlalchemy.orm import Session

import consent
from dataspace.compliance.controller import receipt_policy
from dataspace.consents import changes, offers, queries, stats
from dataspace.context import Context
from dataspace.db import MAX_ID, utcnow
from dataspace.errors import InvalidInput
from dataspace.grants.convert import current_state
from dataspace.grants.models import ConsentGrant
from dataspace.grants.schemas import (
    ChangeRead,
    EventRead,
    GrantCreate,
    GrantRead,
    GrantRenew,
    MatrixRead,
    OfferRead,
    StatsRead,
)
from dataspace.http.deps import GroupWrites, ReadSession, authorize, current_subject, get_context, subject_of
from dataspace.http.params import Id
from dataspace.principal import Principal

router = APIRouter(tags=["consents"])


def _change(change: changes.Change) -> ChangeRead:
    return ChangeRead(
        grant=GrantRead.model_validate(change.grant), receipt_id=change.receipt_id, changed=change.changed
    )


@router.get("/v1/keys/receipts")
def receipt_keys(ctx: Context = Depends(get_context)) -> dict[str, str]:
    """Public: the Ed25519 keys receipts are signed with, ``{kid: base64 raw public key}``."""
    return {k.kid: base64.b64encode(k.public_bytes).decode() for k in ctx.keys.signing_keys}


@router.get("/v1/me/consents", response_model=MatrixRead)
def my_matrix(
    *,
    subject_id: int = Depends(current_subject("me.consents", "read")),
    session: ReadSession,
) -> MatrixRead:
    return queries.matrix(session, subject_id=subject_id)


# Consent changes run through the context's group committer: concurrent changes share one transaction and
# its COMMIT (see dataspace.groupcommit). The route awaits the commit, so the receipt the customer gets is
# durable before the response leaves; a change that fails is run again alone and fails alone.
@router.post(
    "/v1/me/consents",
    response_model=ChangeRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": ChangeRead, "description": "This grant was already in force: nothing changed"}},
)
async def grant_consent(
    *,
    body: GrantCreate,
    response: Response,
    principal: Principal = Depends(authorize("me.consents", "write")),
    ctx: Context = Depends(get_context),
    writes: GroupWrites,
) -> ChangeRead:
    subject_id, request, signer = subject_of(principal), changes.GrantRequest(**body.model_dump()), ctx.keys.signing_key
    policy = receipt_policy(ctx.settings)

    def change(session: Session) -> ChangeRead:
        return _change(
            changes.grant(
                session, subject_id=subject_id, request=request, signer=signer, actor=principal, policy=policy
            )
        )

    out = await writes.run(change)
    response.status_code = status.HTTP_201_CREATED if out.changed else status.HTTP_200_OK
    return out


@router.get("/v1/me/offers", response_model=list[OfferRead])
def my_offers(
    *,
    _: Principal = Depends(authorize("me.consents", "read")),
    session: ReadSession,
) -> list[dict[str, Any]]:
    """The partner x purpose offers that exist (proposed or approved contracts in force) and the fields each
    reads: what the consent screen asks the customer about."""
    return offers.list_offers(session, now=utcnow())


@router.get("/v1/me/consents/history", response_model=list[EventRead])
def my_history(
    *,
    limit: int = Query(default=100, ge=1, le=500),
    before: int | None = Query(default=None, ge=1, le=MAX_ID, description="Events with a smaller id (paging)."),
    subject_id: int = Depends(current_subject("me.consents", "read")),
    session: ReadSession,
) -> list[EventRead]:
    return queries.history_view(session, subject_id=subject_id, limit=limit, before_id=before)


@router.delete("/v1/me/consents/{grant_id}", response_model=ChangeRead)
async def withdraw_consent(
    *,
    grant_id: Id,
    principal: Principal = Depends(authorize("me.consents", "write")),
    ctx: Context = Depends(get_context),
    writes: GroupWrites,
) -> ChangeRead:
    subject_id, signer, policy = subject_of(principal), ctx.keys.signing_key, receipt_policy(ctx.settings)

    def change(session: Session) -> ChangeRead:
        return _change(
            changes.withdraw(
                session, subject_id=subject_id, grant_id=grant_id, signer=signer, actor=principal, policy=policy
            )
        )

    return await writes.run(change)


@router.post("/v1/me/consents/{grant_id}/renew", response_model=ChangeRead)
async def renew_consent(
    *,
    grant_id: Id,
    body: GrantRenew,
    principal: Principal = Depends(authorize("me.consents", "write")),
    ctx: Context = Depends(get_context),
    writes: GroupWrites,
) -> ChangeRead:
    subject_id, signer, until = subject_of(principal), ctx.keys.signing_key, body.valid_until
    policy = receipt_policy(ctx.settings)

    def change(session: Session) -> ChangeRead:
        return _change(
            changes.renew(
                session,
                subject_id=subject_id,
                grant_id=grant_id,
                valid_until=until,
                signer=signer,
                actor=principal,
                policy=policy,
            )
        )

    return await writes.run(change)


@router.get("/v1/me/receipts/{receipt_id}")
def my_receipt(
    *,
    receipt_id: str,
    subject_id: int = Depends(current_subject("me.receipts", "read")),
    session: ReadSession,
) -> Response:
    """The signed receipt exactly as stored (canonical JSON), ready for offline verification."""
    row = queries.get_receipt(session, subject_id=subject_id, receipt_id=receipt_id)
    return Response(row.body, media_type="application/json")


@router.get("/v1/me/receipts/{receipt_id}/kantara")
def my_receipt_kantara(
    *,
    receipt_id: str,
    subject_id: int = Depends(current_subject("me.receipts", "read")),
    session: ReadSession,
    ctx: Context = Depends(get_context),
) -> dict[str, Any]:
    row = queries.get_receipt(session, subject_id=subject_id, receipt_id=receipt_id)
    doc: dict[str, Any] = json.loads(row.body)
    grant = session.get(ConsentGrant, row.grant_id)
    status = current_state(grant, utcnow()) if grant is not None else None
    kid = doc["signature"]["kid"]
    public = next((base64.b64encode(k.public_bytes).decode() for k in ctx.keys.signing_keys if k.kid == kid), "")
    # The notice the receipt names (older receipts without one: the controller's notice as configured now).
    notice = receipt_policy(ctx.settings).controller.url
    return consent.to_kantara(doc, policy_url=notice, public_key=public, status=status)


MAX_STAT_POINTS = 60


@router.get("/v1/consents/stats", response_model=StatsRead)
def consent_stats(
    *,
    since: AwareDatetime | None = Query(default=None, description="Default: 30 days ago."),
    until: AwareDatetime | None = Query(default=None, description="Default: now."),
    step_hours: int = Query(default=24, ge=1, le=24 * 366),
    field: list[str] | None = Query(default=None),
    purpose: list[str] | None = Query(default=None),
    partner: list[str] | None = Query(default=None),
    principal: Principal = Depends(authorize("consents.stats", "read")),
    session: ReadSession,
) -> StatsRead:
    end: datetime = until or utcnow()
    start: datetime = since or end - timedelta(days=30)
    if end - start > timedelta(days=3660):
        raise InvalidInput("the time range is too long")
    # Each time point costs one evaluation per purpose x partner: bound the work one request can ask for.
    if (end - start) / timedelta(hours=step_hours) > MAX_STAT_POINTS:
        raise InvalidInput(f"at most {MAX_STAT_POINTS} time points per request; use a larger step_hours")
    return stats.stats(
        session,
        since=start,
        until=end,
        step=timedelta(hours=step_hours),
        field_keys=field,
        purpose_keys=purpose,
        partner_keys=partner,
    )
