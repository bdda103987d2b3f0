"""Password sign-in for the authorization page, with throttling of failed attempts (never an account lockout).

OWASP's authentication guidance: locking an account after a few failures lets anyone lock its owner out.
Instead, failures are counted per (user name, client address) pair: the first ``FREE_FAILURES`` within
``WINDOW`` cost nothing; after that the pair must wait ``BASE_DELAY * 2**(n - FREE_FAILURES)`` (at most
``MAX_DELAY``) after its last failure before the password is checked again. So a guesser at one address
slows down exponentially, while the owner at another address signs in at once with the right password.
One address is also held to ``MAX_PER_ADDRESS`` failures across all user names per ``WINDOW`` (password
spraying from one host). A throttled attempt is not checked and says when to come back (``retry_after``).
Keys are digests, so the table holds neither names nor addresses; a success clears its pair's failures.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dataspace.auth.models import LoginAttempt, User
from dataspace.auth.passwords import verify_password
from dataspace.db import utcnow

WINDOW = timedelta(minutes=15)
FREE_FAILURES = 5
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(minutes=15)
MAX_PER_ADDRESS = 50


class Outcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    LIMITED = "limited"


@dataclass(frozen=True)
class SignIn:
    outcome: Outcome
    user: User | None = None
    retry_after: int | None = None  # seconds, when LIMITED


def _key(kind: str, *values: str) -> str:
    material = "\x00".join(v.strip().lower() for v in values)
    return f"{kind}:" + hashlib.sha256(material.encode()).hexdigest()[:64]


def _failures(session: Session, key: str, now: datetime) -> tuple[int, datetime | None, datetime | None]:
    """(count, first, last) of ``key``'s failures within the window."""
    count, first, last = session.execute(
        select(func.count(), func.min(LoginAttempt.at), func.max(LoginAttempt.at)).where(
            LoginAttempt.key == key, LoginAttempt.at >= now - WINDOW
        )
    ).one()
    return int(count or 0), first, last


def backoff(failures: int) -> timedelta:
    """How long a (user name, address) pair with ``failures`` recent failures waits after the last one."""
    if failures < FREE_FAILURES:
        return timedelta(0)
    doublings: int = min(failures - FREE_FAILURES, 32)
    return min(MAX_DELAY, BASE_DELAY * (1 << doublings))


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def sign_in(*, session: Session, username: str, password: str, address: str, now: datetime | None = None) -> SignIn:
    now = now or utcnow()
    pair_key, addr_key = _key("ua", username, address), _key("a", address)
    count, _, last = _failures(session, pair_key, now)
    if last is not None and (wait := last + backoff(count) - now) > timedelta(0):
        return SignIn(Outcome.LIMITED, retry_after=_seconds(wait))
    spread, first, _ = _failures(session, addr_key, now)
    if spread >= MAX_PER_ADDRESS and first is not None:
        return SignIn(Outcome.LIMITED, retry_after=_seconds(first + WINDOW - now))
    user = session.scalar(select(User).where(User.username == username)) if len(username) <= 128 else None
    ok = verify_password(user.password_hash if user is not None else None, password)
    if not ok or user is None or user.disabled:
        session.add_all([LoginAttempt(key=pair_key, at=now), LoginAttempt(key=addr_key, at=now)])
        session.flush()
        return SignIn(Outcome.INVALID)
    session.execute(delete(LoginAttempt).where(LoginAttempt.key == pair_key))
    return SignIn(Outcome.OK, user)


def prune(session: Session, *, now: datetime | None = None) -> int:
    """Forget failures older than the window: they slow nobody down any more, and a trace of who failed to
    sign in from where is personal data, kept no longer than it serves (a background task calls this)."""
    cutoff = (now or utcnow()) - WINDOW
    result = session.execute(delete(LoginAttempt).where(LoginAttempt.at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
