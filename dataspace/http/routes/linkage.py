"""Linkage over HTTP: the partner runs its side of the PSI (start, fetch message 1, send the reply); the
customer sees which partners' data a linkage grant lets in and which partners linked records about them.
Grants themselves are ordinary consent changes (``POST /v1/me/consents`` with ``dimension: linkage``)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dataspace.agreements import contracts
from dataspace.context import Context
from dataspace.errors import NotFound
from dataspace.http.deps import WriteSession, authorize, current_subject, get_context, read_session
from dataspace.http.params import Id, read_body
from dataspace.linkage import service
from dataspace.linkage.keys import PartnerKeys
from dataspace.linkage.schemas import DeclarationCreate, DeclarationRead, LinkageCreate, LinkageRead, MyLinkageRead
from dataspace.principal import Principal

router = APIRouter(tags=["linkage"])


def _limit() -> int:
    raw = os.environ.get("DATASPACE_LINKAGE_MAX_REPLY_BYTES", "")
    return int(raw) if raw.isdigit() else service.MAX_REPLY_BYTES


@router.put("/v1/partner/linkage/declarations", response_model=DeclarationRead)
def declare_columns(
    *,
    body: DeclarationCreate,
    principal: Principal = Depends(authorize("partner.contracts", "write")),
    session: WriteSession,
) -> DeclarationRead:
    """Declare the partner columns of a proposed contract (stewards approve them with it)."""
    row = service.declare(
        session,
        principal=principal,
        contract_id=body.contract_id,
        kind=body.kind,
        columns=[c.model_dump(exclude_none=True) for c in body.columns],
    )
    return DeclarationRead.of(row)


@router.get("/v1/partner/linkage/declarations/{contract_id}", response_model=DeclarationRead)
def my_declaration(
    contract_id: Id,
    principal: Principal = Depends(authorize("partner.contracts", "read")),
    session: Session = Depends(read_session),
) -> DeclarationRead:
    contracts.get_owned(session, principal=principal, contract_id=contract_id)
    row = service.declaration(session, contract_id=contract_id)
    if row is None:
        raise NotFound("this contract declares no partner columns")
    return DeclarationRead.of(row)


@router.get("/v1/linkage/declarations/{contract_id}", response_model=DeclarationRead)
def contract_declaration(
    contract_id: Id,
    _principal: Principal = Depends(authorize("contracts", "read")),
    session: Session = Depends(read_session),
) -> DeclarationRead:
    """For the stewards deciding a contract: the partner columns it would bring."""
    row = service.declaration(session, contract_id=contract_id)
    if row is None:
        raise NotFound("this contract declares no partner columns")
    return DeclarationRead.of(row)


@router.post("/v1/partner/linkage", response_model=LinkageRead, status_code=status.HTTP_201_CREATED)
def start_linkage(
    *,
    body: LinkageCreate,
    principal: Principal = Depends(authorize("partner.contracts", "write")),
    ctx: Context = Depends(get_context),
    session: WriteSession,
) -> LinkageRead:
    row = service.start(
        session,
        PartnerKeys.of(ctx.vault),
        principal=principal,
        contract_id=body.contract_id,
        identifiers=service.profile_identifiers(ctx.vault),
    )
    return LinkageRead.of(row)


@router.get("/v1/partner/linkage/{contribution_id}", response_model=LinkageRead)
def my_linkage(
    contribution_id: Id,
    principal: Principal = Depends(authorize("partner.contracts", "read")),
    session: Session = Depends(read_session),
) -> LinkageRead:
    return LinkageRead.of(service.get_owned(session, principal=principal, contribution_id=contribution_id))


@router.get(
    "/v1/partner/linkage/{contribution_id}/message",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def linkage_message(
    contribution_id: Id,
    principal: Principal = Depends(authorize("partner.contracts", "read")),
    session: Session = Depends(read_session),
) -> Response:
    """Message 1: concatenated 32-byte group elements, in the order the reply must keep."""
    data = service.first_message(session, principal=principal, contribution_id=contribution_id)
    return Response(content=data, media_type="application/octet-stream")


def _complete(
    ctx: Context, session: Session, *, principal: Principal, contribution_id: int, data: bytes, limit: int
) -> LinkageRead:
    outcome = service.complete(
        session,
        PartnerKeys.of(ctx.vault),
        principal=principal,
        contribution_id=contribution_id,
        reply=data,
        max_bytes=limit,
    )
    return LinkageRead.of(outcome.contribution)


@router.put("/v1/partner/linkage/{contribution_id}/reply", response_model=LinkageRead)
async def linkage_reply(
    *,
    contribution_id: Id,
    request: Request,
    principal: Principal = Depends(authorize("partner.contracts", "write")),
    ctx: Context = Depends(get_context),
    session: WriteSession,
) -> LinkageRead:
    """Message 2 (``application/octet-stream``, the format of ``clients.sdk._psi.encode_reply``)."""
    limit = _limit()
    data = await read_body(request, limit, "reply")
    return await run_in_threadpool(
        _complete, ctx, session, principal=principal, contribution_id=contribution_id, data=data, limit=limit
    )


@router.get("/v1/me/linkage", response_model=MyLinkageRead)
def my_links(
    subject_id: int = Depends(current_subject("me.consents", "read")),
    session: Session = Depends(read_session),
) -> MyLinkageRead:
    return MyLinkageRead(offers=service.offers(session), links=service.links_of(session, subject_id=subject_id))
