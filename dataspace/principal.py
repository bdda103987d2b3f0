"""Who is calling: the authenticated identity every service receives."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("customer", "partner", "steward", "compliance")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``subject`` is the token's ``sub`` (user name or client id); ``subject_id`` is set for customers (the
    data subject they are) and ``partner_id``/``partner_key`` for partners, so ownership can be enforced.
    """

    subject: str
    role: str
    client_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    subject_id: int | None = None
    partner_id: int | None = None
    partner_key: str | None = None
    token_id: str | None = None
    auth_time: int | None = None  # when the person signed in (epoch seconds); None for client credentials

    @property
    def actor(self) -> str:
        """How audit records name this caller."""
        return f"{self.role}:{self.subject}"


SYSTEM = Principal(subject="system", role="system", client_id="system")
