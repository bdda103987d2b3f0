"""The audit trail: every state-changing action and every authorization failure, never data values.

Entries go to the tamper-evident log ``audit`` (see ``dataspace.tlog``): queued in the caller's transaction,
sequenced into the Merkle tree in batches. Inside ``batched(session)`` the entries of one unit of work (a
consent change and the bonus it earns, say) are queued together at the end of the block: one write instead
of one per entry.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dataspace.db import held_back, utcnow
from dataspace.principal import Principal
from dataspace.tlog.log import NewEntry, append

AUDIT_LOG = "audit"


def iso_time(t: datetime) -> str:
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """Keep JSON types; anything else (ids as UUID, dates, enums) becomes its string form."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, datetime):
        return iso_time(value)
    return str(value)


# Entries recorded by the server itself (no caller, or the ``SYSTEM`` principal) name the process that did it,
# by the action's family: a compliance officer reads "system:expiry-sweep", not "anonymous". Requests from
# callers that could not be authenticated (``authz.*``, ``auth.*`` sign-in failures) stay "anonymous".
SYSTEM_ACTORS: dict[str, str] = {
    "consent.expired": "system:expiry-sweep",
    "job.": "system:job-runner",
    "release.": "system:job-runner",
    "oauth.": "system:authorization-server",
    "backup.": "system:backup",
    "ingest.": "system:ingest",
    "catalog.": "system:catalog-loader",
    "consent.": "system:consent-service",
}
ANONYMOUS_ACTIONS = ("authz.", "auth.")


def system_actor(action: str) -> str:
    """How an entry with no authenticated caller names who acted (see ``SYSTEM_ACTORS``)."""
    if action.startswith(ANONYMOUS_ACTIONS):
        return "anonymous"
    for prefix, name in SYSTEM_ACTORS.items():
        if action == prefix or (prefix.endswith(".") and action.startswith(prefix)):
            return name
    return "system:server"


def _target_ref(target: str, kind: str) -> str | None:
    prefix, _, ref = target.partition(":")
    return ref if prefix == kind and ref else None


def audit_entry(
    *,
    actor: Principal | None,
    action: str,
    target: str,
    result: str,
    request_id: str | None,
    details: dict[str, Any] | None,
    at: datetime,
) -> NewEntry:
    clean = _plain(details or {})
    subject_id: int | None = None
    partner: str | None = None
    if actor is not None and actor.role == "customer":
        subject_id = actor.subject_id
    if actor is not None and actor.partner_key:
        partner = actor.partner_key
    if subject_id is None:
        raw = clean.get("subject_id", _target_ref(target, "subject"))
        subject_id = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None
    if partner is None:
        raw_p = clean.get("partner_key", clean.get("partner", _target_ref(target, "partner")))
        partner = str(raw_p)[:64] if isinstance(raw_p, str) and raw_p else None
    if actor is None or (actor.role == "system" and actor.subject == "system"):
        name = system_actor(action)
    else:
        name = actor.actor
    entry = {
        "time": iso_time(at),
        "actor": name,
        "role": actor.role if actor is not None else ("system" if name.startswith("system:") else None),
        "client_id": actor.client_id if actor is not None else None,
        "action": action,
        "target": target,
        "result": result,
        "request_id": request_id,
        "details": clean,
    }
    return NewEntry(
        entry=entry, created_at=at, action=action, actor=entry["actor"], subject_id=subject_id, partner=partner
    )


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
    """
    entry = audit_entry(
        actor=actor, action=action, target=target, result=result, request_id=request_id, details=details, at=utcnow()
    )
    pending: list[NewEntry] | None = session.info.get(_PENDING)
    if pending is not None:
        pending.append(entry)
        return
    append(session, log=AUDIT_LOG, entries=[entry])


_PENDING = "audit_pending_entries"


def batched(session: Session) -> AbstractContextManager[None]:
    """Hold back the ``record_event`` entries of this block and queue them, in order, in one append when it
    ends (still in the caller's transaction). If the block raises, none is queued: the caller's transaction
    is failing anyway. Nested blocks join the outermost one."""
    return held_back(session, _PENDING, [], lambda pending: _append_all(session, pending))


def _append_all(session: Session, entries: list[NewEntry]) -> None:
    if entries:
        append(session, log=AUDIT_LOG, entries=entries)


__all__ = ["AUDIT_LOG", "SYSTEM_ACTORS", "audit_entry", "batched", "record_event", "system_actor"]
