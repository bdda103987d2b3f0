"""OAuth scopes: which scope each (object, action) a route authorizes needs, and which scopes each role may hold.

Scopes narrow what one token can do; the role (through the Casbin policy) decides the maximum. A token
carries the intersection of what the client asked for, what the client is registered for, and what the
role allows. Fail closed: an (object, action) missing from ``OBJECT_SCOPES`` needs a scope no token holds,
so it is denied; the route-matrix test fails for any route whose object is not listed here.

``STEP_UP_SCOPES`` guard irreversible actions (erasure, redemption, policy changes): they are granted only
when a client asks for them by name, never to client-credentials clients (no person signs in), and a token
holding one is honoured for them only within ``Settings.reauth_seconds`` of the person's sign-in
(``auth_time``; RFC 9470 step-up).
"""

from __future__ import annotations

# scope -> what it allows (the README's table is written from this).
SCOPE_DESCRIPTIONS: dict[str, str] = {
    "catalog": "read the data manual, purposes and partners; stewards: edit the catalog",
    "consents": "read and change my consents, their history and receipts",
    "usage": "read how my data was used (with proofs) and export all my data",
    "points": "read my points and the rewards; stewards: edit rewards",
    "redeem": "redeem points for a reward (recent sign-in)",
    "erase": "erase my account and data (recent sign-in)",
    "partner": "a partner's contracts, models, jobs, budget and webhooks",
    "audit": "the audit trail and its proofs, records of processing, request log, consent statistics",
    "admin": "steward work: ingest, partners, contracts, models, privacy budgets, decisions, reading policy rules",
    "policy": "change the access-policy rules (recent sign-in)",
}
SCOPES = tuple(SCOPE_DESCRIPTIONS)

# Granted only when asked for by name, and honoured only shortly after a person's sign-in.
STEP_UP_SCOPES = frozenset({"redeem", "erase", "policy"})

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "customer": frozenset({"catalog", "consents", "usage", "points", "redeem", "erase"}),
    "partner": frozenset({"catalog", "partner"}),
    "steward": frozenset({"catalog", "points", "audit", "admin", "policy"}),
    "compliance": frozenset({"catalog", "points", "audit", "admin"}),
}

# (object, action) -> scope, exact match only. Every object a route authorizes is listed; nothing else is.
OBJECT_SCOPES: dict[tuple[str, str], str] = {
    ("catalog", "read"): "catalog",
    ("catalog", "write"): "catalog",
    ("me.consents", "read"): "consents",
    ("me.consents", "write"): "consents",
    ("me.receipts", "read"): "consents",
    ("me.usage", "read"): "usage",
    ("me.export", "read"): "usage",
    ("me.points", "read"): "points",
    ("me.redemptions", "write"): "redeem",
    ("me.erasure", "write"): "erase",
    ("rewards", "read"): "points",
    ("rewards", "write"): "points",
    ("partner.contracts", "read"): "partner",
    ("partner.contracts", "write"): "partner",
    ("partner.models", "read"): "partner",
    ("partner.models", "write"): "partner",
    ("partner.jobs", "read"): "partner",
    ("partner.jobs", "write"): "partner",
    ("partner.budget", "read"): "partner",
    ("partner.webhooks", "read"): "partner",
    ("partner.webhooks", "write"): "partner",
    ("audit", "read"): "audit",
    ("audit.checkpoint", "read"): "audit",
    ("consents.stats", "read"): "audit",
    ("compliance.records", "read"): "audit",
    ("compliance.requests", "read"): "audit",
    ("ingest", "write"): "admin",
    ("partners", "write"): "admin",
    ("contracts", "read"): "admin",
    ("contracts", "write"): "admin",
    ("models", "read"): "admin",
    ("models", "write"): "admin",
    ("jobs.decisions", "read"): "admin",
    ("jobs", "read"): "admin",
    ("realtime.decisions", "read"): "admin",
    ("realtime.decisions", "write"): "admin",
    ("event_contracts", "read"): "admin",
    ("event_contracts", "write"): "admin",
    ("events", "write"): "admin",
    ("events", "read"): "admin",
    ("event_deliveries", "read"): "admin",
    ("event_deliveries", "write"): "admin",
    ("partner.event_contracts", "read"): "partner",
    ("partner.event_contracts", "write"): "partner",
    ("partner.events", "write"): "partner",
    ("collaboration", "read"): "admin",
    ("partner.collaboration", "read"): "partner",
    ("partner.collaboration", "write"): "partner",
    ("admin.policies", "read"): "admin",
    ("admin.policies", "write"): "policy",
}


def required_scope(obj: str, act: str) -> str | None:
    """The scope ``act`` on ``obj`` needs; None for an unknown pair, which the caller must deny."""
    return OBJECT_SCOPES.get((obj, act))


def needs_recent_sign_in(obj: str, act: str) -> bool:
    return OBJECT_SCOPES.get((obj, act)) in STEP_UP_SCOPES


def scopes_for(
    role: str, requested: str | None = None, registered: list[str] | None = None, *, person: bool = True
) -> list[str]:
    """The scopes a token for ``role`` gets: requested ∩ registered (or all) ∩ the role's.

    An omitted (or blank) request means the role's everyday scopes: the step-up scopes only by name. A
    client acting for itself (``person=False``: client credentials) never gets a step-up scope."""
    allowed = set(ROLE_SCOPES.get(role, frozenset()))
    if registered is not None:
        allowed &= set(registered)
    if not person:
        allowed -= STEP_UP_SCOPES
    if requested is None or not requested.strip():
        allowed -= STEP_UP_SCOPES
    else:
        allowed &= set(requested.split())
    return sorted(allowed)
