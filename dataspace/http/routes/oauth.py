"""OAuth 2 endpoints (public by nature): metadata, JWKS, token, authorize (login page), revoke, introspect."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.auth import login
from dataspace.auth.models import OAuthClient
from dataspace.auth.server import metadata
from dataspace.auth.tokens import jwks
from dataspace.context import Context
from dataspace.http.deps import WriteSession, get_context
from dataspace.http.oauth import (
    OAUTH_PARAMS,
    FastAPIAuthorizationServer,
    FastAPIOAuth2Request,
    FormData,
    read_form,
)
from dataspace.http.signin_i18n import LANGS, TEXTS, choose_lang, client_name, scope_names

router = APIRouter(tags=["oauth"])
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
CSRF_FIELD = "csrf_token"
CSRF_COOKIE = "dataspace_login_csrf"
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def _server(ctx: Context, session: Session) -> FastAPIAuthorizationServer:
    return FastAPIAuthorizationServer(ctx.settings, ctx.keys, session)


def _oauth_request(request: Request, form: FormData, ctx: Context) -> FastAPIOAuth2Request:
    return FastAPIOAuth2Request(request, form, ctx.settings.resolved_issuer)


@router.get("/.well-known/oauth-authorization-server")
def authorization_server_metadata(ctx: Context = Depends(get_context)) -> dict[str, Any]:
    return metadata(ctx.settings)


@router.get("/oauth/jwks")
def json_web_key_set(ctx: Context = Depends(get_context)) -> JSONResponse:
    return JSONResponse(jwks(ctx.keys), headers={"Cache-Control": "public, max-age=300"})


@router.post("/oauth/token")
def token(
    *,
    request: Request,
    form: FormData = Depends(read_form),
    ctx: Context = Depends(get_context),
    session: WriteSession,
) -> Response:
    response: Response = _server(ctx, session).create_token_response(_oauth_request(request, form, ctx))
    return response


@router.post("/oauth/revoke")
def revoke(
    *,
    request: Request,
    form: FormData = Depends(read_form),
    ctx: Context = Depends(get_context),
    session: WriteSession,
) -> Response:
    response: Response = _server(ctx, session).create_endpoint_response(
        "revocation", _oauth_request(request, form, ctx)
    )
    return response


@router.post("/oauth/introspect")
def introspect(
    *,
    request: Request,
    form: FormData = Depends(read_form),
    ctx: Context = Depends(get_context),
    session: WriteSession,
) -> Response:
    response: Response = _server(ctx, session).create_endpoint_response(
        "introspection", _oauth_request(request, form, ctx)
    )
    return response


def _lang(request: Request, oauth_request: FastAPIOAuth2Request) -> str:
    return choose_lang(oauth_request.payload.data.get("ui_locales"), request.headers.get("accept-language"))


def _login_page(
    request: Request,
    oauth_request: FastAPIOAuth2Request,
    client: OAuthClient | None,
    *,
    status: int = 200,
    error: str | None = None,
    username: str = "",
    retry_after: int | None = None,
) -> HTMLResponse:
    data = oauth_request.payload.data
    params = [(name, data[name]) for name in OAUTH_PARAMS if data.get(name)]
    scope = data.get("scope")
    csrf = secrets.token_urlsafe(32)
    lang = _lang(request, oauth_request)
    other = next(code for code in LANGS if code != lang)
    switch = [(name, value) for name, value in params if name != "ui_locales"] + [("ui_locales", other)]
    html = _templates.get_template("login.html").render(
        t=TEXTS[lang],
        lang=lang,
        other_lang=other,
        switch_href="/oauth/authorize?" + urlencode(switch),
        params=[*params, (CSRF_FIELD, csrf)],
        error=TEXTS[lang][error] if error else None,
        username=username,
        client_name=client_name(lang, client.client_id, client.name or client.client_id)
        if client is not None
        else None,
        scopes=scope_names(lang, scope.split()) if scope else [],
        # A step-up request (RFC 9470): say why the person is asked for the password again.
        reauth="login" in (data.get("prompt") or "").split() or data.get("max_age") is not None,
    )
    headers = _PAGE_HEADERS if retry_after is None else {**_PAGE_HEADERS, "Retry-After": str(retry_after)}
    response = HTMLResponse(html, status_code=status, headers=headers)
    # Double-submit token against login CSRF (a foreign page posting its own credentials into this browser).
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="strict",
        path="/oauth/authorize",
        secure=oauth_request.uri.startswith("https://"),
    )
    return response


def _csrf_ok(request: Request, form: FormData) -> bool:
    values, kept = form.get(CSRF_FIELD) or [], request.cookies.get(CSRF_COOKIE)
    return len(values) == 1 and bool(kept) and hmac.compare_digest(values[0].encode(), str(kept).encode())


def _rejected(server: FastAPIAuthorizationServer, oauth_request: FastAPIOAuth2Request, error: OAuth2Error) -> Response:
    if error.redirect_uri:  # the client and its redirect URI are known: tell the client (RFC 6749 §4.1.2.1)
        response: Response = server.handle_error_response(oauth_request, error)
        return response
    # Unknown client or unregistered redirect URI: never redirect; show the error to the user.
    server.handle_error_response(oauth_request, error)  # records the audit event
    lang = choose_lang(oauth_request.payload.data.get("ui_locales"), oauth_request.headers.get("accept-language"))
    html = _templates.get_template("oauth_error.html").render(
        t=TEXTS[lang], lang=lang, error=error.error, description=error.description
    )
    return HTMLResponse(html, status_code=400, headers=_PAGE_HEADERS)


@router.get("/oauth/authorize")
def authorize_page(*, request: Request, ctx: Context = Depends(get_context), session: WriteSession) -> Response:
    server = _server(ctx, session)
    oauth_request = _oauth_request(request, {}, ctx)
    try:
        grant = server.get_consent_grant(oauth_request)
    except OAuth2Error as error:
        return _rejected(server, oauth_request, error)
    return _login_page(request, oauth_request, grant.client)


@router.post("/oauth/authorize")
def authorize_submit(
    *,
    request: Request,
    form: FormData = Depends(read_form),
    ctx: Context = Depends(get_context),
    session: WriteSession,
) -> Response:
    server = _server(ctx, session)
    oauth_request = _oauth_request(request, form, ctx)
    try:
        grant = server.get_consent_grant(oauth_request)
    except OAuth2Error as error:
        return _rejected(server, oauth_request, error)
    client: OAuthClient = grant.client
    fields = oauth_request.form
    if not _csrf_ok(request, form):
        record_event(
            session, actor=None, action="auth.login_csrf", target=f"client:{client.client_id}", result="denied"
        )
        return _login_page(request, oauth_request, client, status=403, error="expired")
    if fields.get("action") == "deny":
        denied: Response = server.create_authorization_response(oauth_request, grant_user=None, grant=grant)
        return denied
    username = fields.get("username", "")
    address = request.client.host if request.client else "unknown"
    result = login.sign_in(session=session, username=username, password=fields.get("password", ""), address=address)
    if result.outcome is login.Outcome.LIMITED:
        record_event(
            session, actor=None, action="auth.login_limited", target=f"client:{client.client_id}", result="denied"
        )
        return _login_page(
            request,
            oauth_request,
            client,
            status=429,
            username=username,
            error="limited",
            retry_after=result.retry_after,
        )
    if result.outcome is login.Outcome.INVALID or result.user is None:
        record_event(
            session, actor=None, action="auth.login_failed", target=f"client:{client.client_id}", result="denied"
        )
        return _login_page(request, oauth_request, client, status=401, username=username, error="invalid")
    if result.user.role != client.role:
        record_event(
            session,
            actor=None,
            action="auth.login_wrong_app",
            target=f"client:{client.client_id}",
            result="denied",
            details={"role": result.user.role},
        )
        return _login_page(
            request,
            oauth_request,
            client,
            status=403,
            username=username,
            error="wrong_app",
        )
    response: Response = server.create_authorization_response(oauth_request, grant_user=result.user, grant=grant)
    return response
