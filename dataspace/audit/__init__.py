"""The audit trail: every state-changing action and every authorization failure, never data values."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dataspace.auth.principal import Principal


def record_event(
    session: Session,
    *,
    actor: Principal | None,
    action: str,
    target: str,
    result: str = "ok",
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append an audit entry in the caller's transaction (written together with the change or not at all).

    ``details`` must hold ids, counts and names only: never customer values or secrets.
    (Interim no-op: the tamper-evident implementation replaces this body.)
    """
    return None
