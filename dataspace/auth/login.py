"""Password sign-in for the authorization page, with rate limiting of failed attempts.

At most ``MAX_PER_USER`` failures per user name and ``MAX_PER_ADDRESS`` per client address within
``WINDOW``; beyond that the password is not even checked. Keys are digests, so the table holds no names.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dataspace.auth.models import LoginAttempt, User
from dataspace.auth.passwords import verify_password
from dataspace.db import utcnow

WINDOW = timedelta(minutes=15)
MAX_PER_USER = 5
MAX_PER_ADDRESS = 50


class Outcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    LIMITED = "limited"


@dataclass(frozen=True)
class SignIn:
    outcome: Outcome
    user: User | None = None


def _key(kind: str, value: str) -> str:
    return f"{kind}:" + hashlib.sha256(value.strip().lower().encode()).hexdigest()[:64]


def _failures(session: Session, key: str) -> int:
    since = utcnow() - WINDOW
    return int(
        session.scalar(
            select(func.count()).select_from(LoginAttempt).where(LoginAttempt.key == key, LoginAttempt.at >= since)
        )
        or 0
    )


def sign_in(*, session: Session, username: str, password: str, address: str) -> SignIn:
    user_key, addr_key = _key("u", username), _key("a", address)
    if _failures(session, user_key) >= MAX_PER_USER or _failures(session, addr_key) >= MAX_PER_ADDRESS:
        return SignIn(Outcome.LIMITED)
    user = session.scalar(select(User).where(User.username == username)) if len(username) <= 128 else None
    ok = verify_password(user.password_hash if user is not None else None, password)
    if not ok or user is None or user.disabled:
        session.add_all([LoginAttempt(key=user_key), LoginAttempt(key=addr_key)])
        session.flush()
        return SignIn(Outcome.INVALID)
    session.execute(delete(LoginAttempt).where(LoginAttempt.key == user_key))
    return SignIn(Outcome.OK, user)
