"""The OAuth 2 authorization server, on authlib's framework-agnostic ``AuthorizationServer``.

Grants: client credentials; authorization code with PKCE (S256) required for every client; refresh tokens
with rotation (a rotated refresh token presented again revokes its whole family). Endpoints: revocation
(RFC 7009) and introspection (RFC 7662). A replayed authorization code is refused and revokes every token
issued from it. One instance serves one request and writes through that request's session; the HTTP
layer (``dataspace.http.oauth``) supplies the request/response adapter.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, ClassVar

from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.auth import tokens
from dataspace.auth.models import AuthorizationCode, IssuedToken, OAuthClient, User, digest
from dataspace.auth.scopes import SCOPES, scopes_for
from dataspace.auth.service import get_client
from dataspace.db import utcnow
from dataspace.errors import Unauthorized
from dataspace.keys import KeyRing
from dataspace.settings import Settings

CODE_TTL = timedelta(seconds=60)
# Authorization request parameters whose RFC 6749 / 7636 grammar (VSCHAR, NQCHAR, URI) is printable ASCII.
ASCII_PARAMS = (
    "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method",
    "max_age", "prompt",
)  # fmt: skip
# OIDC ``prompt`` values we accept. Every authorization request asks for the password (there is no sign-in
# session to reuse), so ``login`` and any ``max_age`` are met by construction; ``none`` (no sign-in page)
# can never be met and is answered with ``login_required``.
PROMPTS = frozenset({"login", "consent"})
MAX_AGE = re.compile(r"[0-9]{1,9}")
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
SECRET_METHODS = ["client_secret_basic", "client_secret_post"]


def metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    issuer = settings.resolved_issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/oauth/jwks",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [*SECRET_METHODS, "none"],
        "revocation_endpoint_auth_methods_supported": [*SECRET_METHODS, "none"],
        "introspection_endpoint_auth_methods_supported": SECRET_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "ui_locales_supported": ["en", "zh-CN"],  # the sign-in page's languages (http/signin_i18n)
    }


class _ServerBound:
    @property
    def ds(self) -> DataspaceAuthorizationServer:
        server: DataspaceAuthorizationServer = self.server  # type: ignore[attr-defined]
        return server


class ClientCredentialsGrant(_ServerBound, grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = SECRET_METHODS


class AuthorizationCodeGrant(_ServerBound, grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [*SECRET_METHODS, "none"]

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        # OAuth 2.1: PKCE for every client, and only S256 (``plain`` would defeat it).
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method=S256 is required.", redirect_uri=redirect_uri)
        max_age = data.get("max_age")
        if max_age is not None and not MAX_AGE.fullmatch(max_age):
            raise InvalidRequestError("max_age must be a number of seconds.", redirect_uri=redirect_uri)
        prompts = set((data.get("prompt") or "").split())
        if "none" in prompts:
            raise LoginRequiredError(redirect_uri=redirect_uri)
        if prompts - PROMPTS:
            raise InvalidRequestError("Unsupported prompt value.", redirect_uri=redirect_uri)
        return redirect_uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> AuthorizationCode:
        data = request.payload.data
        user: User = request.user
        client: OAuthClient = request.client
        scope = " ".join(scopes_for(user.role, request.payload.scope, client.scopes))
        row = AuthorizationCode(
            code_hash=digest(code),
            client_id=client.client_id,
            user_id=user.id,
            redirect_uri=data.get("redirect_uri") or "",
            scope=scope,
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
            expires_at=utcnow() + CODE_TTL,
        )
        self.ds.session.add(row)
        self.ds.session.flush()
        return row

    def query_authorization_code(self, code: str, client: OAuthClient) -> AuthorizationCode | None:
        session = self.ds.session
        row = session.scalar(
            select(AuthorizationCode).where(AuthorizationCode.code_hash == digest(code)).with_for_update()
        )
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            # A replayed code: refuse it and revoke what the first exchange produced (RFC 6749 §4.1.2).
            revoked = tokens.revoke_code_tokens(session, row.id)
            record_event(
                session,
                actor=None,
                action="oauth.code_replayed",
                target=f"client:{client.client_id}",
                result="denied",
                details={"code_id": row.id, "tokens_revoked": revoked},
            )
            return None
        if row.expires_at <= utcnow():
            return None
        return row

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        authorization_code.used_at = utcnow()
        self.ds.session.flush()

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        user = self.ds.session.get(User, authorization_code.user_id)
        if user is None or user.disabled:
            return None
        # The code is created in the request where the person signed in: that is the sign-in time.
        self.ds.token_generator.auth_time = authorization_code.created_at
        return user


class LoginRequiredError(OAuth2Error):  # type: ignore[misc]
    """OIDC ``login_required``: ``prompt=none`` asked for no sign-in page, but every authorization needs one."""

    error = "login_required"


class PKCE(CodeChallenge):  # type: ignore[misc]
    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]

    def get_authorization_code_challenge(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.code_challenge_method


class RefreshTokenGrant(_ServerBound, grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [*SECRET_METHODS, "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> IssuedToken | None:
        session = self.ds.session
        row = session.scalar(
            select(IssuedToken).where(IssuedToken.refresh_token_hash == digest(refresh_token)).with_for_update()
        )
        if row is None or row.revoked_at is not None:
            return None
        if row.rotated_at is not None:
            # Reuse of a rotated refresh token: someone holds a stolen copy; end the whole family.
            revoked = tokens.revoke_family(session, row.family)
            record_event(
                session,
                actor=None,
                action="oauth.refresh_reused",
                target=f"client:{row.client_id}",
                result="denied",
                details={"family_revoked": revoked},
            )
            return None
        if row.is_refresh_expired():
            return None
        return row

    def authenticate_user(self, refresh_token: IssuedToken) -> User | None:
        if refresh_token.user_id is None:
            return None
        user = self.ds.session.get(User, refresh_token.user_id)
        if user is None or user.disabled:
            return None
        # Rotation keeps the ORIGINAL sign-in time: refreshing is not signing in again.
        self.ds.token_generator.auth_time = refresh_token.auth_time
        return user

    def revoke_old_credential(self, refresh_token: IssuedToken) -> None:
        refresh_token.rotated_at = utcnow()
        self.ds.session.flush()


class _RefreshView:
    """An issuance looked up by its refresh token: active while the refresh token is."""

    def __init__(self, row: IssuedToken) -> None:
        self.row = row

    def check_client(self, client: OAuthClient) -> bool:
        return self.row.check_client(client)

    def is_expired(self) -> bool:
        return self.row.is_refresh_expired()

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.row.rotated_at is not None


def find_token(ds: DataspaceAuthorizationServer, token: str, hint: str | None) -> Any:
    session = ds.session
    if hint != "access_token":
        row = session.scalar(select(IssuedToken).where(IssuedToken.refresh_token_hash == digest(token)))
        if row is not None:
            return _RefreshView(row)
    if hint != "refresh_token" or token.count(".") == 2:
        try:
            verified = tokens.verify_access_token(ds.settings, ds.keys, token)
        except Unauthorized:
            return None
        if verified.local:
            return session.scalar(select(IssuedToken).where(IssuedToken.jti == verified.claims["jti"]))
    return None


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = [*SECRET_METHODS, "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return find_token(self.server, token_string, token_type_hint)

    def revoke_token(self, token: Any, request: OAuth2Request) -> None:
        row: IssuedToken = token.row if isinstance(token, _RefreshView) else token
        # Revoking either token of a grant ends the grant (RFC 7009 §2.1 "SHOULD also invalidate").
        tokens.revoke_family(self.server.session, row.family)
        record_event(
            self.server.session,
            actor=None,
            action="oauth.token_revoked",
            target=f"client:{row.client_id}",
            details={"jti": row.jti},
        )


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = SECRET_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return find_token(self.server, token_string, token_type_hint)

    def check_permission(self, token: Any, client: OAuthClient, request: OAuth2Request) -> bool:
        # The client the token was issued to, or the operator's own (steward) services.
        return bool(token.check_client(client) or client.role == "steward")

    def introspect_token(self, token: Any) -> dict[str, Any]:
        row: IssuedToken = token.row if isinstance(token, _RefreshView) else token
        user = self.server.session.get(User, row.user_id) if row.user_id is not None else None
        return {
            "active": True,
            "client_id": row.client_id,
            "scope": row.scope,
            "sub": user.username if user is not None else row.client_id,
            "role": row.role,
            "token_type": "refresh_token" if isinstance(token, _RefreshView) else "Bearer",
            "exp": int(
                (
                    row.refresh_expires_at
                    if isinstance(token, _RefreshView) and row.refresh_expires_at
                    else row.expires_at
                ).timestamp()
            ),
            "iat": int(row.issued_at.timestamp()),
            "jti": row.jti,
            "iss": self.server.settings.resolved_issuer,
            "aud": tokens.AUDIENCE,
        }


class DataspaceAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Storage and policy; the HTTP adapter subclass adds request/response conversion."""

    def __init__(self, settings: Settings, keys: KeyRing, session: Session) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.settings = settings
        self.keys = keys
        self.session = session
        self.token_generator = tokens.AccessTokenGenerator(settings, keys, session)
        self.register_token_generator("default", self.token_generator)
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(AuthorizationCodeGrant, [PKCE(required=True)])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)

    def query_client(self, client_id: str) -> OAuthClient | None:
        if not client_id or len(client_id) > 64:
            return None
        return get_client(self.session, client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        parent = request.refresh_token if isinstance(request.refresh_token, IssuedToken) else None
        code = request.authorization_code if isinstance(request.authorization_code, AuthorizationCode) else None
        tokens.store_token(
            self.session, self.settings, token, client=request.client, user=request.user, parent=parent, code=code
        )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def get_consent_grant(self, request: Any = None, end_user: Any = None) -> Any:
        # authlib echoes response_type and redirect_uri into error descriptions, and refuses (ValueError:
        # a 500) to build one holding characters RFC 6749 forbids there; those parameters are printable
        # ASCII by the RFC's grammar anyway, so anything else is a plain invalid_request.
        payload = getattr(request, "payload", None)
        data = payload.data if payload is not None else {}
        for name in ASCII_PARAMS:
            value = data.get(name)
            if isinstance(value, str) and not PRINTABLE_ASCII.fullmatch(value):
                raise InvalidRequestError(f"'{name}' must be printable ASCII.")
        return super().get_consent_grant(request, end_user)

    def handle_error_response(self, request: OAuth2Request, error: OAuth2Error) -> Any:
        # Which client it was (as claimed: ids are not secrets); never the secret or the code.
        payload = getattr(request, "payload", None)
        claimed = payload.client_id if payload is not None else None
        if not claimed and hasattr(request, "headers"):
            claimed = extract_basic_authorization(request.headers)[0]
        client_id = str(claimed or "")[:64] or None
        record_event(
            self.session,
            actor=None,
            action="oauth.error",
            target=f"client:{client_id}",
            result=error.error,
            details={"endpoint": _endpoint_of(request)},
        )
        return super().handle_error_response(request, error)


def _endpoint_of(request: OAuth2Request) -> str:
    uri = getattr(request, "uri", "") or ""
    return uri.split("?", 1)[0].rsplit("/", 1)[-1][:32]
