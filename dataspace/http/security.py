"""Bearer-token authentication and the authorization decision for every guarded route.

``authorize_request`` verifies the JWT (our key ring, or the trusted external issuer), checks it was not
revoked, builds the ``Principal``, then asks: does the token carry the scope this (object, action) needs
(``dataspace.auth.scopes``; an unlisted object needs a scope no token has, so it is denied), does the policy
allow (role, object, action), and do the hard rules hold (compliance is read-only; a customer token must
name its data subject, a partner token its partner). Anything else is denied. An irreversible action also
needs the person's sign-in (``auth_time``) within ``Settings.reauth_seconds``: otherwise 401 with RFC 9470
step-up guidance (``StepUpRequired``). Failures say nothing specific to the caller and are recorded in the
audit trail.

``authorize_from_memory`` makes the same decision without I/O when every answer it needs is remembered
(see ``dataspace.auth.tokens`` for the two bounded memos and the revocation bound); it only ever allows.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from dataspace.audit import record_event
from dataspace.auth.policy import authorizer_for
from dataspace.auth.scopes import ROLE_SCOPES, needs_recent_sign_in, required_scope
from dataspace.auth.tokens import (
    external_role,
    is_active_cached,
    is_active_remembered,
    verify_access_token,
    verify_remembered,
)
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import Forbidden, StepUpRequired, Unauthorized
from dataspace.principal import ROLES, Principal

log = logging.getLogger("dataspace.auth")

# Routes reachable without a token, on purpose. The route-matrix test fails for any other route without
# an ``authorize`` dependency, so adding a public route means adding it here.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/livez",
        "/readyz",
        "/.well-known/oauth-authorization-server",
        "/oauth/jwks",
        "/oauth/token",
        "/oauth/authorize",
        "/oauth/revoke",
        "/oauth/introspect",
        "/v1/keys/receipts",
        "/privacy",  # the controller's privacy notice (no data)
        "/",  # the landing page (links to the apps; no data)
        "/v1/events/schemas",
        "/v1/events/schemas/{event_type}/v{version}",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
)
# web pages (no data)
PUBLIC_PREFIXES = ("/static/", "/portal/static/", "/portal/", "/console/", "/partner/", "/steward/")


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _audit_failure(
    request: Request, ctx: Context, principal: Principal | None, *, obj: str, act: str, result: str, reason: str
) -> None:
    log.info(
        "authorization failed",
        extra={"obj": obj, "act": act, "result": result, "reason": reason, "path": request.url.path},
    )
    try:
        with ctx.db.transaction() as session:
            record_event(
                session,
                actor=principal,
                action="authz.denied",
                target=f"{obj}:{act}",
                result=result,
                request_id=getattr(request.state, "request_id", None),
                details={"reason": reason, "method": request.method, "path": request.url.path},
            )
    except Exception:
        log.exception("could not record the authorization failure")


def principal_from_claims(claims: dict[str, Any], *, local: bool, role_claim: str) -> Principal:
    role = claims.get("role") if local else external_role(claims, role_claim)
    if role not in ROLES:
        raise Unauthorized()
    scope = claims.get("scope")
    # Fail closed: a token without a ``scope`` claim (ours always have one) holds no scope.
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    subject_id, partner_id = claims.get("subject_id"), claims.get("partner_id")
    auth_time = claims.get("auth_time")
    return Principal(
        subject=str(claims["sub"]),
        role=str(role),
        client_id=str(claims.get("client_id") or claims.get("azp") or ""),
        scopes=scopes & ROLE_SCOPES[str(role)],
        subject_id=subject_id if isinstance(subject_id, int) else None,
        partner_id=partner_id if isinstance(partner_id, int) else None,
        partner_key=str(claims["partner_key"]) if claims.get("partner_key") else None,
        token_id=str(claims["jti"]) if claims.get("jti") else None,
        auth_time=auth_time if isinstance(auth_time, int) and not isinstance(auth_time, bool) else None,
    )


def authenticate(request: Request, ctx: Context) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized()
    verified = verify_access_token(ctx.settings, ctx.keys, token)
    principal = principal_from_claims(
        verified.claims, local=verified.local, role_claim=ctx.settings.external_role_claim
    )
    # Revocation: asked of the database, or of a memo at most ``token_active_cache_seconds`` old (see
    # ``dataspace.auth.tokens.ActiveTokens`` for the bound; a revocation through this process is immediate).
    if verified.local and (
        principal.token_id is None or not is_active_cached(ctx.settings, ctx.db, principal.token_id)
    ):
        raise Unauthorized()
    return principal


def _hard_rule_denial(principal: Principal, obj: str, act: str) -> str | None:
    scope = required_scope(obj, act)
    if scope is None or scope not in principal.scopes:  # an unknown object needs a scope nobody holds
        return "insufficient_scope"
    if principal.role == "compliance" and act != "read":
        return "compliance_read_only"
    if principal.role == "customer" and principal.subject_id is None:
        return "customer_without_subject"
    if principal.role == "partner" and principal.partner_id is None:
        return "partner_without_partner"
    return None


def signed_in_recently(ctx: Context, principal: Principal, now: float | None = None) -> bool:
    """The person behind the token signed in at most ``reauth_seconds`` ago (a token without ``auth_time``,
    e.g. client credentials, never has; a sign-in time in the future is not believed)."""
    if principal.auth_time is None:
        return False
    age = (utcnow().timestamp() if now is None else now) - principal.auth_time
    return -60 <= age <= ctx.settings.reauth_seconds


def denial_reason(ctx: Context, principal: Principal, obj: str, act: str) -> str | None:
    """Why ``principal`` may not ``act`` on ``obj`` (None when allowed)."""
    reason = _hard_rule_denial(principal, obj, act)
    if reason is None and not authorizer_for(ctx, ctx.db).allows(principal.role, obj, act):
        return "policy"
    if reason is None and needs_recent_sign_in(obj, act) and not signed_in_recently(ctx, principal):
        return "stale_authentication"
    return reason


def authorize_request(request: Request, ctx: Context, obj: str, act: str) -> Principal:
    try:
        principal = authenticate(request, ctx)
    except Unauthorized:
        _audit_failure(request, ctx, None, obj=obj, act=act, result="unauthorized", reason="invalid_token")
        raise
    reason = denial_reason(ctx, principal, obj, act)
    if reason == "stale_authentication":
        _audit_failure(request, ctx, principal, obj=obj, act=act, result="unauthorized", reason=reason)
        raise StepUpRequired(ctx.settings.reauth_seconds)
    if reason is not None:
        _audit_failure(request, ctx, principal, obj=obj, act=act, result="forbidden", reason=reason)
        raise Forbidden()
    request.state.principal = principal
    return principal


def authorize_from_memory(request: Request, ctx: Context, obj: str, act: str) -> Principal | None:
    """``authorize_request``'s answer when it is an *allow* that needs neither the database nor the network:
    the token's signature check and its not-revoked answer are remembered (``dataspace.auth.tokens``) and
    the policy decision is cached and fresh. Every check is the same; anything else (a first sight of the
    token, any denial, an external issuer) returns None, and ``authorize_request`` decides and audits."""
    token = bearer_token(request)
    if token is None:
        return None
    verified = verify_remembered(ctx.settings, ctx.keys, token)
    if verified is None:
        return None
    try:
        principal = principal_from_claims(verified.claims, local=True, role_claim=ctx.settings.external_role_claim)
    except Unauthorized:
        return None
    if principal.token_id is None or not is_active_remembered(ctx.settings, ctx.db, principal.token_id):
        return None
    if _hard_rule_denial(principal, obj, act) is not None:
        return None
    if needs_recent_sign_in(obj, act) and not signed_in_recently(ctx, principal):
        return None
    if authorizer_for(ctx, ctx.db).remembered(principal.role, obj, act) is not True:
        return None
    request.state.principal = principal
    return principal
