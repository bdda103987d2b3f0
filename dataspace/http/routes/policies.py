"""Stewards read and change the authorization policy (Casbin rules stored in the database)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from dataspace.audit import record_event
from dataspace.auth import policy
from dataspace.context import Context
from dataspace.http.deps import WriteSession, after_commit, authorize, get_context
from dataspace.principal import Principal

router = APIRouter(prefix="/v1/admin/policies", tags=["admin"])


class PolicyRuleRead(BaseModel):
    ptype: str
    role: str
    obj: str
    act: str


class PolicyRuleCreate(BaseModel):
    role: str = Field(max_length=32)
    obj: str = Field(max_length=128)
    act: str = Field(max_length=16)


@router.get("")
def list_policy_rules(
    *,
    principal: Principal = Depends(authorize("admin.policies", "read")),
    session: WriteSession,  # the first read stores the default policy
) -> list[PolicyRuleRead]:
    rules = policy.list_rules(session=session)
    return [PolicyRuleRead(ptype=p, role=a, obj=b, act=c) for p, a, b, c in rules]


@router.post("", status_code=201)
def add_policy_rule(
    *,
    body: PolicyRuleCreate,
    request: Request,
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("admin.policies", "write")),
    session: WriteSession,
) -> PolicyRuleRead:
    policy.add_rule(session=session, role=body.role, obj=body.obj, act=body.act)
    record_event(
        session,
        actor=principal,
        action="policy.rule_added",
        target=f"{body.obj}:{body.act}",
        request_id=getattr(request.state, "request_id", None),
        details={"role": body.role},
    )
    after_commit(session, policy.authorizer_for(ctx, ctx.db).invalidate)  # the next check reads the new rules
    return PolicyRuleRead(ptype="p", role=body.role, obj=body.obj, act=body.act)


@router.delete("", status_code=204)
def remove_policy_rule(
    *,
    role: str,
    obj: str,
    act: str,
    request: Request,
    ctx: Context = Depends(get_context),
    principal: Principal = Depends(authorize("admin.policies", "write")),
    session: WriteSession,
) -> None:
    policy.remove_rule(session=session, role=role, obj=obj, act=act)
    record_event(
        session,
        actor=principal,
        action="policy.rule_removed",
        target=f"{obj}:{act}",
        request_id=getattr(request.state, "request_id", None),
        details={"role": role},
    )
    after_commit(session, policy.authorizer_for(ctx, ctx.db).invalidate)  # the next check reads the new rules
