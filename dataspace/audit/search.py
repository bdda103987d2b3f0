"""Audit search for compliance: time range, subject, partner, action; keyset pagination, newest first.

Searches queued and sequenced entries alike (a just-recorded event is visible before it is sequenced).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.errors import InvalidInput
from dataspace.tlog.models import TLogEntry

MAX_LIMIT = 500


@dataclass(frozen=True)
class AuditEvent:
    id: int
    index: int | None
    entry: dict[str, Any]


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEvent]
    next_cursor: str | None


def search_events(
    session: Session,
    *,
    log: str = "audit",
    since: datetime | None = None,
    until: datetime | None = None,
    subject_id: int | None = None,
    partner: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> AuditPage:
    """``action`` matches exactly, or as a prefix when it ends with ``*`` (``consent.*``)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    q = select(TLogEntry.id, TLogEntry.idx, TLogEntry.entry).where(TLogEntry.log == log)
    if since is not None:
        q = q.where(TLogEntry.created_at >= since)
    if until is not None:
        q = q.where(TLogEntry.created_at < until)
    if subject_id is not None:
        q = q.where(TLogEntry.subject_id == subject_id)
    if partner:
        q = q.where(TLogEntry.partner == partner)
    if actor:
        q = q.where(TLogEntry.actor == actor)
    if action:
        if action.endswith("*"):
            prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(TLogEntry.action.like(prefix + "%", escape="\\"))
        else:
            q = q.where(TLogEntry.action == action)
    if cursor:
        try:
            before = int(cursor)
        except ValueError as exc:
            raise InvalidInput("bad cursor") from exc
        q = q.where(TLogEntry.id < before)
    rows = session.execute(q.order_by(TLogEntry.id.desc()).limit(limit + 1)).all()
    items = [AuditEvent(id=r[0], index=r[1], entry=json.loads(r[2])) for r in rows[:limit]]
    next_cursor = str(items[-1].id) if len(rows) > limit else None
    return AuditPage(items=items, next_cursor=next_cursor)


def list_actions(session: Session, *, log: str = "audit") -> list[str]:
    """The actions recorded in a log so far, sorted (what a console's action picker offers)."""
    q = select(TLogEntry.action).where(TLogEntry.log == log, TLogEntry.action != "").distinct()
    return sorted(str(a) for a in session.scalars(q))
