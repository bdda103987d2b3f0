"""Authorization decisions: Casbin (model in ``policies/model.conf``, rules in the database) plus hard rules.

The rule table is seeded from ``policies/policy.csv`` when it is empty, and stewards change it through
``/v1/admin/policies``. Decisions are cached per (role, object, action); the cache is dropped whenever the
rules are reloaded (after a change in this process, and every ``max_age`` seconds for other processes).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import casbin
from casbin import persist
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataspace.auth.models import PolicyRule
from dataspace.db import Database
from dataspace.errors import Conflict, InvalidInput, NotFound
from dataspace.principal import ROLES
from policies import MODEL_PATH, POLICY_PATH

ACTIONS = ("read", "write")
_OBJ = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_*]+)*(\.\*)?$|^\*$")


def default_rules(path: str | None = None) -> list[tuple[str, str, str, str]]:
    """The ``p``/``g`` lines of the default policy file."""
    rules: list[tuple[str, str, str, str]] = []
    with open(path or POLICY_PATH, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(",")]
            parts += [""] * (4 - len(parts))
            rules.append((parts[0], parts[1], parts[2], parts[3]))
    return rules


def _rows(session: Session) -> list[tuple[str, str, str, str]]:
    return [(r.ptype, r.v0, r.v1, r.v2) for r in session.scalars(select(PolicyRule).order_by(PolicyRule.id))]


def ensure_default_policy(session: Session) -> list[tuple[str, str, str, str]]:
    """Seed an empty rule table from ``policies/policy.csv``; return the rules."""
    rows = _rows(session)
    if rows:
        return rows
    rules = list(dict.fromkeys(default_rules()))
    try:
        # Several processes (or request threads) may seed an empty table at once; the loser re-reads.
        with session.begin_nested():
            session.add_all(PolicyRule(ptype=p, v0=a, v1=b, v2=c) for p, a, b, c in rules)
    except IntegrityError:
        return _rows(session)
    return rules


class _RulesAdapter(persist.Adapter):  # type: ignore[misc]
    def __init__(self, rules: Iterable[tuple[str, str, str, str]]) -> None:
        self.rules = list(rules)

    def load_policy(self, model: Any) -> None:
        for ptype, *values in self.rules:
            line = ", ".join([ptype, *(v for v in values if v)])
            persist.load_policy_line(line, model)


def build_enforcer(rules: Iterable[tuple[str, str, str, str]]) -> casbin.Enforcer:
    return casbin.Enforcer(str(MODEL_PATH), _RulesAdapter(rules))


class Authorizer:
    """Role/object/action decisions with a decision cache; safe to share between request threads."""

    def __init__(self, db: Database, *, max_age: float = 30.0) -> None:
        self.db = db
        self.max_age = max_age
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._enforcer: casbin.Enforcer | None = None
        self._loaded_at = 0.0
        self._cache: dict[tuple[str, str, str], bool] = {}

    def reload(self) -> None:
        with self.db.transaction() as session:
            rules = ensure_default_policy(session)
        enforcer = build_enforcer(rules)
        with self._lock:
            self._enforcer = enforcer
            self._cache = {}
            self._loaded_at = time.monotonic()

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def _stale(self) -> bool:
        return self._enforcer is None or time.monotonic() - self._loaded_at > self.max_age

    def _current(self) -> casbin.Enforcer:
        if self._stale():
            with self._reload_lock:  # one reload per process at a time, not one per waiting request
                if self._stale():
                    self.reload()
        assert self._enforcer is not None
        return self._enforcer

    def remembered(self, role: str, obj: str, act: str) -> bool | None:
        """The decision ``allows`` would give, if it is cached and the rules are fresh; else None."""
        if self._stale():
            return None
        return self._cache.get((role, obj, act))

    def allows(self, role: str, obj: str, act: str) -> bool:
        enforcer = self._current()
        key = (role, obj, act)
        decision = self._cache.get(key)
        if decision is None:
            decision = bool(enforcer.enforce(role, obj, act))
            if len(self._cache) > 100_000:  # bounded: objects come from code, but be safe
                self._cache = {}
            self._cache[key] = decision
        return decision


def authorizer_for(holder: Any, db: Database) -> Authorizer:
    """The Authorizer attached to a long-lived object (the Context), created on first use."""
    az: Authorizer | None = holder.__dict__.get("_authorizer")
    if az is None:
        az = Authorizer(db)
        holder.__dict__["_authorizer"] = az
    return az


# --- steward changes -----------------------------------------------------------------------------
def _check(role: str, obj: str, act: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if act not in ACTIONS:
        raise InvalidInput(f"unknown action {act!r}; expected read or write")
    if not _OBJ.match(obj) or len(obj) > 128:
        raise InvalidInput(f"invalid object {obj!r}")


def list_rules(*, session: Session) -> list[tuple[str, str, str, str]]:
    return ensure_default_policy(session)


def add_rule(*, session: Session, role: str, obj: str, act: str) -> None:
    _check(role, obj, act)
    ensure_default_policy(session)
    exists = session.scalar(
        select(PolicyRule.id).where(
            PolicyRule.ptype == "p", PolicyRule.v0 == role, PolicyRule.v1 == obj, PolicyRule.v2 == act
        )
    )
    if exists is not None:
        raise Conflict("this rule already exists")
    session.add(PolicyRule(ptype="p", v0=role, v1=obj, v2=act))
    session.flush()


def remove_rule(*, session: Session, role: str, obj: str, act: str) -> None:
    ensure_default_policy(session)
    result = session.execute(
        delete(PolicyRule).where(
            PolicyRule.ptype == "p", PolicyRule.v0 == role, PolicyRule.v1 == obj, PolicyRule.v2 == act
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound("no such rule")
