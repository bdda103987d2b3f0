"""OAuth scopes per API area, and which scopes each role may hold.

Scopes narrow what one token can do; the role (through the Casbin policy) decides the maximum. A token
carries the intersection of what the client asked for, what the client is registered for, and what the
role allows. An object with no scope rule below needs no particular scope (the policy alone decides).
"""

from __future__ import annotations

SCOPES = ("catalog", "consents", "usage", "points", "partner", "audit", "admin")

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "customer": frozenset({"catalog", "consents", "usage", "points"}),
    "partner": frozenset({"catalog", "partner"}),
    "steward": frozenset(SCOPES),
    "compliance": frozenset(SCOPES),
}

# (object prefix, scope): the first matching prefix wins; "x" matches "x" and "x.anything".
SCOPE_RULES: tuple[tuple[str, str], ...] = (
    ("catalog", "catalog"),
    ("me.consents", "consents"),
    ("me.receipts", "consents"),
    ("me.usage", "usage"),
    ("me.export", "usage"),
    ("me.points", "points"),
    ("me.redemptions", "points"),
    ("rewards", "points"),
    ("partner", "partner"),
    ("audit", "audit"),
    ("admin", "admin"),
    ("ingest", "admin"),
    ("partners", "admin"),
)


def required_scope(obj: str) -> str | None:
    for prefix, scope in SCOPE_RULES:
        if obj == prefix or obj.startswith(prefix + "."):
            return scope
    return None


def scopes_for(role: str, requested: str | None = None, registered: list[str] | None = None) -> list[str]:
    """The scopes a token for ``role`` gets: requested (or all) ∩ registered (or all) ∩ role's."""
    allowed = set(ROLE_SCOPES.get(role, frozenset()))
    if registered is not None:
        allowed &= set(registered)
    if requested:
        allowed &= set(requested.split())
    return sorted(allowed)
