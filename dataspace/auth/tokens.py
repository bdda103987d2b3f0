"""JWT access tokens (RFC 9068): issuance through authlib's generator, storage, and verification.

Access tokens are ES256 JWTs signed with the key ring's active token key (``kid`` in the header); every
token key in the ring verifies, so after ``dataspace keys rotate`` old tokens stay valid until they expire.
Each issuance is stored (by ``jti``, plus the refresh token's digest) so tokens can be revoked.

Two bounded in-process caches keep the per-request cost of a bearer token low (see ``VerifiedTokens`` and
``ActiveTokens``): the signature check of a token already verified with a key still in the ring, and, for
at most ``Settings.token_active_cache_seconds`` (2 s by default), the database's answer "this token is
known and not revoked". Only positive answers are kept; a revocation in this process clears them at once
(and again when it commits), so the bound applies only to revocations made by another server process.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeyParameters, KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import Connection, bindparam, event, select, update
from sqlalchemy.orm import Session

from dataspace.auth.models import AuthorizationCode, IssuedToken, OAuthClient, User, digest
from dataspace.auth.scopes import scopes_for
from dataspace.db import Database, utcnow
from dataspace.errors import Unauthorized
from dataspace.keys import JwtSigningKey, KeyRing
from dataspace.partners.models import Partner
from dataspace.principal import ROLES
from dataspace.settings import Settings

AUDIENCE = "dataspace"
LOCAL_ALG = "ES256"
EXTERNAL_ALGS = ("RS256", "ES256")
_JWT_TYPES = ("at+jwt", "application/at+jwt")


# --- keys ----------------------------------------------------------------------------------------
_key_cache: dict[tuple[str, bool], ECKey] = {}


def _jwk(key: JwtSigningKey, *, private: bool) -> ECKey:
    cached = _key_cache.get((key.kid, private))
    if cached is None:
        params: KeyParameters = {"kid": key.kid, "alg": LOCAL_ALG, "use": "sig"}
        cached = ECKey.import_key(key.public_pem, params)
        if private:
            # The private side as a key object beside the public JWK, never exported: an HSM-held key
            # (dataspace.pkcs11) signs inside the module through the same object.
            cached = ECKey(key.private_key, cached.as_dict(private=False), params)
        _key_cache[(key.kid, private)] = cached
    return cached


def jwks(keys: KeyRing) -> dict[str, Any]:
    """The public JSON Web Key Set: every token key in the ring (active first)."""
    return dict(KeySet([_jwk(k, private=False) for k in keys.token_keys]).as_dict(private=False))


def _verification_keys(ring: KeyRing) -> tuple[set[str], KeySet]:
    keys = ring.token_keys
    return {k.kid for k in keys}, KeySet([_jwk(k, private=False) for k in keys])


# --- issuance ------------------------------------------------------------------------------------
class AccessTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """authlib's RFC 9068 generator, signing with the key ring and adding the Dataspace claims."""

    def __init__(self, settings: Settings, keys: KeyRing, session: Session, *, ttl: int | None = None) -> None:
        super().__init__(
            issuer=settings.resolved_issuer,
            alg=LOCAL_ALG,
            refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
            expires_generator=settings.access_token_ttl if ttl is None else ttl,
        )
        self.keys = keys
        self.session = session
        # The person's sign-in time for the token being issued (set by the grant: the authorization code's
        # sign-in, or the refresh token's original one); None for client credentials.
        self.auth_time: datetime | None = None

    def generate(  # noqa: PLR0917  (authlib's signature, called positionally by its __call__)
        self,
        grant_type: str,
        client: OAuthClient,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        if user is None:  # client credentials: the client's own role and registration, never a step-up scope
            scope = " ".join(scopes_for(client.role, scope, client.scopes, person=False))
        token: dict[str, Any] = super().generate(
            grant_type,
            client,
            user=user,
            scope=scope,
            expires_in=expires_in,
            include_refresh_token=include_refresh_token,
        )
        # RFC 6749 §5.1: ``scope`` is required when it differs from the request; always sending it (also when
        # it narrowed to nothing: "") means a client never has to guess what it got.
        token["scope"] = str(token.get("scope") or "")
        return token

    def get_jwks(self) -> KeySet:
        # A one-key set: joserfc then writes the key's ``kid`` into the JWT header.
        return KeySet([_jwk(self.keys.token_key, private=True)])

    def get_auth_time(self, user: User | None) -> int | None:
        return int(self.auth_time.timestamp()) if user is not None and self.auth_time is not None else None

    def get_audiences(self, client: Any, user: Any, scope: str) -> str:
        return AUDIENCE

    def get_jti(self, client: Any, grant_type: str, user: Any, scope: str) -> str:
        return secrets.token_urlsafe(18)

    def get_extra_claims(self, client: OAuthClient, grant_type: str, user: User | None, scope: str) -> dict[str, Any]:
        owner: User | OAuthClient = user if user is not None else client
        claims: dict[str, Any] = {"role": owner.role, "scope": scope or ""}
        if user is not None and user.subject_id is not None:
            claims["subject_id"] = user.subject_id
        if owner.partner_id is not None:
            partner = self.session.get(Partner, owner.partner_id)
            claims["partner_id"] = owner.partner_id
            if partner is not None:
                claims["partner_key"] = partner.key
        return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT *we just issued* (used only to store its ``jti``/``exp``)."""
    import json

    payload: dict[str, Any] = json.loads(jws.extract_compact(token.encode()).payload)
    return payload


def store_token(
    session: Session,
    settings: Settings,
    token: dict[str, Any],
    *,
    client: OAuthClient,
    user: User | None,
    parent: IssuedToken | None = None,
    code: AuthorizationCode | None = None,
) -> IssuedToken:
    """Record an issuance so it can be introspected, refreshed (rotated) and revoked."""
    claims = unverified_claims(token["access_token"])
    now = utcnow()
    refresh = token.get("refresh_token")
    row = IssuedToken(
        jti=claims["jti"],
        client_id=client.client_id,
        user_id=user.id if user is not None else None,
        role=claims["role"],
        scope=token.get("scope", ""),
        refresh_token_hash=digest(refresh) if refresh else None,
        family=parent.family if parent is not None else secrets.token_hex(16),
        code_id=code.id if code is not None else (parent.code_id if parent is not None else None),
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        refresh_expires_at=now + timedelta(seconds=settings.refresh_token_ttl) if refresh else None,
        auth_time=datetime.fromtimestamp(claims["auth_time"], UTC) if "auth_time" in claims else None,
    )
    session.add(row)
    session.flush()
    return row


def issue(
    settings: Settings,
    keys: KeyRing,
    session: Session,
    *,
    client: OAuthClient,
    user: User | None = None,
    scope: str | None = None,
    grant_type: str = "client_credentials",
    include_refresh_token: bool = False,
    ttl: int | None = None,
    auth_time: datetime | None = None,
) -> dict[str, Any]:
    """Mint and store a token exactly as the token endpoint does (used by provisioning and tests);
    ``auth_time``: when the user signed in (only for a token issued to a user)."""
    generator = AccessTokenGenerator(settings, keys, session, ttl=ttl)
    generator.auth_time = auth_time if user is not None else None
    token: dict[str, Any] = generator.generate(
        grant_type=grant_type, client=client, user=user, scope=scope, include_refresh_token=include_refresh_token
    )
    store_token(session, settings, token, client=client, user=user)
    return token


def revoke_family(session: Session, family: str) -> int:
    result = session.execute(
        update(IssuedToken)
        .where(IssuedToken.family == family, IssuedToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    forget_active(session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def revoke_user_tokens(session: Session, user_ids: list[int]) -> int:
    """Revoke every token issued to these users (account erasure)."""
    result = session.execute(
        update(IssuedToken)
        .where(IssuedToken.user_id.in_(user_ids), IssuedToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    forget_active(session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def revoke_code_tokens(session: Session, code_id: int) -> int:
    families = session.scalars(select(IssuedToken.family).where(IssuedToken.code_id == code_id)).all()
    return sum(revoke_family(session, f) for f in set(families))


# --- verification --------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifiedToken:
    claims: dict[str, Any]
    local: bool


class ExternalIssuer:
    """An external OIDC issuer's JWKS, fetched over HTTP and cached for a few minutes."""

    def __init__(self, jwks_url: str, *, max_age: float = 300.0) -> None:
        self.jwks_url = jwks_url
        self.max_age = max_age
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._lock = threading.Lock()

    def keys(self) -> KeySet:
        with self._lock:
            if self._keys is None or time.monotonic() - self._fetched > self.max_age:
                response = httpx.get(self.jwks_url, timeout=5.0)
                response.raise_for_status()
                self._keys = KeySet.import_key_set(response.json())
                self._fetched = time.monotonic()
            return self._keys


_external: dict[str, ExternalIssuer] = {}


def _external_issuer(url: str) -> ExternalIssuer:
    issuer = _external.get(url)
    if issuer is None:
        issuer = _external[url] = ExternalIssuer(url)
    return issuer


def _claims_registry(issuer: str, audience: str, *, local: bool, now: int | None) -> JWTClaimsRegistry:
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": audience},
        "exp": {"essential": True},
        "sub": {"essential": True},
    }
    if local:
        options["jti"] = {"essential": True}
    return JWTClaimsRegistry(now=now, **options)


class VerifiedTokens:
    """Local tokens whose signature (and header) already verified: sha256(token) -> (key, claims).

    Verification is a pure function of the token's bytes and the key, so a hit skips only the ES256 check and
    the parsing; the claims (issuer, audience, expiry: everything time- or configuration-dependent) are
    validated again on every use, and a hit counts only while its key is still in the ring. Keyed by a digest
    so lookups never compare secret strings. Bounded (oldest entries go first); thread-safe.
    """

    def __init__(self, max_size: int = 10_000) -> None:
        self.max_size = max_size
        self._entries: dict[bytes, tuple[JwtSigningKey, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, digest_: bytes) -> tuple[JwtSigningKey, dict[str, Any]] | None:
        return self._entries.get(digest_)

    def put(self, digest_: bytes, key: JwtSigningKey, claims: dict[str, Any]) -> None:
        with self._lock:
            while len(self._entries) >= self.max_size:
                del self._entries[next(iter(self._entries))]
            self._entries[digest_] = (key, claims)

    def discard(self, digest_: bytes) -> None:
        with self._lock:
            self._entries.pop(digest_, None)


_verified = VerifiedTokens()


def _remembered(settings: Settings, keys: KeyRing, token_digest: bytes, now: int | None) -> VerifiedToken | None:
    """The token as verified before, with its claims checked again now; None if not remembered."""
    hit = _verified.get(token_digest)
    if hit is None or hit[0] not in keys.token_keys:
        return None
    claims = dict(hit[1])
    try:
        _claims_registry(settings.resolved_issuer, AUDIENCE, local=True, now=now).validate(claims)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise Unauthorized() from exc
    return VerifiedToken(claims=claims, local=True)


def verify_remembered(settings: Settings, keys: KeyRing, token: str) -> VerifiedToken | None:
    """``verify_access_token`` when its answer needs no work but the claims check (see ``VerifiedTokens``):
    the token, or None when it is not remembered or does not verify (ask ``verify_access_token`` then)."""
    try:
        return _remembered(settings, keys, hashlib.sha256(token.encode()).digest(), None)
    except Unauthorized:
        return None


def verify_access_token(settings: Settings, ring: KeyRing, token: str, *, now: int | None = None) -> VerifiedToken:
    """Check signature, algorithm, ``typ``, ``iss``, ``aud`` and ``exp``; any failure is ``Unauthorized``."""
    token_digest = hashlib.sha256(token.encode()).digest()
    remembered = _remembered(settings, ring, token_digest, now)
    if remembered is not None:
        return remembered
    try:
        header = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError, UnicodeError) as exc:
        raise Unauthorized() from exc
    alg, kid = header.get("alg"), header.get("kid")
    local_kids, local_keys = _verification_keys(ring)
    if alg == LOCAL_ALG and kid in local_kids:
        if header.get("typ") not in _JWT_TYPES:
            raise Unauthorized()
        keys, issuer, audience, local = local_keys, settings.resolved_issuer, AUDIENCE, True
    elif settings.external_issuer and settings.external_jwks_url and alg in EXTERNAL_ALGS:
        try:
            keys = _external_issuer(settings.external_jwks_url).keys()
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise Unauthorized() from exc
        issuer, audience, local = settings.external_issuer, settings.external_audience or AUDIENCE, False
    else:
        raise Unauthorized()
    try:
        decoded = jwt.decode(token, keys, algorithms=[alg])
        _claims_registry(issuer, audience, local=local, now=now).validate(decoded.claims)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise Unauthorized() from exc
    if local:
        # Remember the signature check (not the claims check, which runs on every use, see VerifiedTokens).
        key = next(k for k in ring.token_keys if k.kid == kid)
        _verified.put(token_digest, key, dict(decoded.claims))
    return VerifiedToken(claims=decoded.claims, local=local)


def external_role(claims: dict[str, Any], claim_name: str) -> str | None:
    """Map an external issuer's role claim (a string or a list) to one of our roles."""
    value = claims.get(claim_name)
    values = value if isinstance(value, list) else [value]
    for role in ROLES:
        if role in values:
            return role
    return None


_REVOKED_AT = select(IssuedToken.__table__.c.revoked_at).where(IssuedToken.__table__.c.jti == bindparam("jti"))


def is_active(session: Session | Connection, jti: str) -> bool:
    """Known to us and not revoked."""
    row = session.execute(_REVOKED_AT, {"jti": jti}).first()
    return row is not None and row[0] is None


class ActiveTokens:
    """A size-bounded memo of positive ``is_active`` answers, per database.

    An answer is fresh for ``max_age`` seconds after it was read, and for as long after that as the
    revocation watch (``watch_revocations``, a background task of every server process) keeps confirming it:
    each sweep drops the tokens revoked since the previous one, then marks the memo fresh until ``max_age``
    after the sweep started. So a busy replica asks the database about a token once, not once per request
    or per ``max_age``, and the bound stays the same.

    Bound on revocation: a token revoked by *this* process is refused from the moment ``revoke_family`` (or
    ``revoke_user_tokens``) runs: ``forget_active`` clears the memo then, and again after the revoking
    transaction commits (a check that read the row before the commit cannot re-add it: every clear moves the
    generation on, and an answer read under an older generation is not stored). A token revoked by *another*
    process (another API replica) is refused at most ``max_age`` seconds later: within a sweep interval when
    the watch runs, and by the answer's own age when it does not (a sweep that fails confirms nothing).
    Negative answers (unknown or revoked) are never kept. At most ``max_size`` entries (cleared when full).
    Thread-safe.
    """

    def __init__(self, max_size: int = 100_000) -> None:
        self.max_size = max_size
        self._entries: dict[tuple[str, str], float] = {}
        self._confirmed_until: dict[str, float] = {}  # per database: a sweep vouches for every entry until then
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    def fresh(self, key: tuple[str, str]) -> bool:
        deadline = self._entries.get(key)
        if deadline is None:
            return False
        now = time.monotonic()
        return deadline > now or self._confirmed_until.get(key[0], 0.0) > now

    def remember(self, key: tuple[str, str], max_age: float, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a revocation happened while this answer was being read
            if len(self._entries) >= self.max_size:
                self._entries.clear()
            self._entries[key] = time.monotonic() + max_age

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._confirmed_until.clear()

    def swept(self, db_url: str, revoked: Iterable[str], started: float, max_age: float, generation: int) -> None:
        """A sweep that started at ``started`` (monotonic) found ``revoked``: drop them, then vouch for the rest
        until ``started + max_age``, unless a local revocation cleared the memo meanwhile."""
        with self._lock:
            unchanged = generation == self._generation
            self._generation += 1  # a check that read a token before its revocation must not store it
            for jti in revoked:
                self._entries.pop((db_url, jti), None)
            if unchanged:
                self._confirmed_until[db_url] = started + max_age


_active = ActiveTokens()
_FORGET_ON_COMMIT = "tokens_forget_on_commit"


def forget_active(session: Session) -> None:
    """A revocation is being written in ``session``: drop remembered answers now and when it commits."""
    _active.clear()
    if not session.info.get(_FORGET_ON_COMMIT):
        session.info[_FORGET_ON_COMMIT] = True
        target = weakref.ref(session)

        def _after_commit(_session: Session) -> None:
            _active.clear()
            live = target()
            if live is not None:
                live.info.pop(_FORGET_ON_COMMIT, None)

        event.listen(session, "after_commit", _after_commit, once=True)


# Revocations are read back this far behind the previous sweep: a revoking transaction stamps
# ``revoked_at`` with its own server's clock before it commits, so a sweep must also see rows stamped a
# little before it started (slow commits, clocks of other replicas a little behind).
REVOCATION_OVERLAP = timedelta(seconds=30)
_REVOKED_SINCE = select(IssuedToken.__table__.c.jti).where(IssuedToken.__table__.c.revoked_at >= bindparam("since"))


class RevocationWatch:
    """The background task that keeps ``ActiveTokens`` answers confirmed: one indexed query per sweep for
    the tokens revoked since the previous sweep (minus ``REVOCATION_OVERLAP``), whoever revoked them."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._since = utcnow() - REVOCATION_OVERLAP

    def sweep(self) -> int:
        """Run one sweep; returns how many revoked tokens it saw."""
        max_age = self.settings.token_active_cache_seconds
        if max_age <= 0:
            return 0
        generation, started, wall = _active.generation, time.monotonic(), utcnow()
        with self.db.read_engine.connect() as conn:
            revoked = list(conn.execute(_REVOKED_SINCE, {"since": self._since}).scalars())
        _active.swept(self.db.url, revoked, started, max_age, generation)
        self._since = wall - REVOCATION_OVERLAP
        return len(revoked)


def is_active_remembered(settings: Settings, db: Database, jti: str) -> bool:
    """True when ``is_active`` said yes less than ``token_active_cache_seconds`` ago (no database access)."""
    return settings.token_active_cache_seconds > 0 and _active.fresh((db.url, jti))


def is_active_cached(settings: Settings, db: Database, jti: str) -> bool:
    """``is_active``, answered from ``ActiveTokens`` when it said yes less than the configured seconds ago."""
    if is_active_remembered(settings, db, jti):
        return True
    generation = _active.generation
    # A bare connection, not a Session: this runs for every request the memo cannot answer.
    with db.read_engine.connect() as conn:
        active = is_active(conn, jti)
    max_age = settings.token_active_cache_seconds
    if active and max_age > 0:
        _active.remember((db.url, jti), max_age, generation)
    return active
