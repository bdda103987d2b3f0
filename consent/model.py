"""The consent model: what a grant covers, how it changes over time, and the single-check rule.

A grant is (subject, field or whole dimension, purpose, partner or partner category, validity window,
granularity). Nothing is granted by default. Sensitive fields (PIPL art. 29/23) are only ever covered by an
explicit grant naming that field *and* that partner: a dimension-level grant or an "any partner of this
category" grant never covers them.

A grant's lifecycle is ``active -> withdrawn`` or ``active -> expired``; ``renew`` only moves the end of a
still-running window, and never changes what the grant covers, so the materialized grant row answers
"was this permitted at time t?" exactly for every t up to now.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from consent.errors import InvalidGrant

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")

# Clients' clocks drift: a valid_from this close to the server's "now" counts as "now" rather than as an
# attempt to back-date a consent.
CLOCK_SKEW = timedelta(minutes=5)


class Granularity(enum.StrEnum):
    """Which transforms a grant allows. ``pseudonymized-raw`` also allows ``generalized`` (it is wider)."""

    GENERALIZED = "generalized"
    PSEUDONYMIZED_RAW = "pseudonymized-raw"

    @property
    def level(self) -> int:
        return GRANULARITY_LEVEL[self]


GRANULARITY_LEVEL: dict[Granularity, int] = {Granularity.GENERALIZED: 1, Granularity.PSEUDONYMIZED_RAW: 2}


class GrantState(enum.StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class EventKind(enum.StrEnum):
    GRANTED = "granted"
    RENEWED = "renewed"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


# W3C DPV consent status terms, one per event kind.
DPV_STATUS: dict[EventKind, str] = {
    EventKind.GRANTED: "dpv:ConsentGiven",
    EventKind.RENEWED: "dpv:ConsentGiven",
    EventKind.WITHDRAWN: "dpv:ConsentWithdrawn",
    EventKind.EXPIRED: "dpv:ConsentExpired",
}


@dataclass(frozen=True)
class FieldRef:
    """A catalog field as the evaluator needs it."""

    key: str
    dimension: str
    sensitive: bool = False


@dataclass(frozen=True)
class PartnerRef:
    key: str
    category: str


@dataclass(frozen=True)
class Scope:
    """What a grant covers. Exactly one of ``field``/``dimension`` and of ``partner``/``partner_category``."""

    purpose: str
    field: str | None = None
    dimension: str | None = None
    partner: str | None = None
    partner_category: str | None = None

    def __post_init__(self) -> None:
        if (self.field is None) == (self.dimension is None):
            raise InvalidGrant("name exactly one of field or dimension")
        if (self.partner is None) == (self.partner_category is None):
            raise InvalidGrant("name exactly one of partner or partner_category")
        for name in ("purpose", "field", "dimension", "partner", "partner_category"):
            value = getattr(self, name)
            if value is not None and not KEY_RE.match(value):
                raise InvalidGrant(f"{name} is not a valid key")

    @property
    def target(self) -> str:
        """``f:<field>`` or ``d:<dimension>``."""
        return f"f:{self.field}" if self.field is not None else f"d:{self.dimension}"

    @property
    def recipient(self) -> str:
        """``p:<partner>`` or ``c:<partner category>``."""
        return f"p:{self.partner}" if self.partner is not None else f"c:{self.partner_category}"

    @property
    def key(self) -> str:
        """A stable string naming the scope (used for the "one active grant per scope" rule)."""
        return f"{self.target}|u:{self.purpose}|{self.recipient}"

    def covers(self, field: FieldRef, partner: PartnerRef, purpose: str) -> bool:
        if self.purpose != purpose:
            return False
        if self.field is not None:
            field_ok = self.field == field.key
        else:
            field_ok = self.dimension == field.dimension and not field.sensitive
        if self.partner is not None:
            partner_ok = self.partner == partner.key
        else:
            partner_ok = self.partner_category == partner.category and not field.sensitive
        return field_ok and partner_ok


@dataclass(frozen=True)
class Grant:
    """The current state of one grant (the materialized row)."""

    id: int
    subject_id: int
    scope: Scope
    granularity: Granularity
    valid_from: datetime
    valid_until: datetime | None
    state: GrantState = GrantState.ACTIVE
    withdrawn_at: datetime | None = None

    @property
    def effective_end(self) -> datetime | None:
        """When the grant stops counting (the earlier of the window's end and the withdrawal)."""
        if self.withdrawn_at is None:
            return self.valid_until
        if self.valid_until is None:
            return self.withdrawn_at
        return min(self.valid_until, self.withdrawn_at)

    def in_force(self, at: datetime) -> bool:
        _require_aware(at, "at")
        end = self.effective_end
        return self.valid_from <= at and (end is None or at < end)

    def lapsed(self, now: datetime) -> bool:
        """Active on paper but past its window: due to be materialized as expired."""
        return self.state is GrantState.ACTIVE and self.valid_until is not None and self.valid_until <= now


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidGrant(f"{name} must be a timezone-aware UTC time")


@dataclass(frozen=True)
class Window:
    valid_from: datetime
    valid_until: datetime | None


def validate_window(now: datetime, valid_from: datetime | None, valid_until: datetime | None) -> Window:
    """Check a requested validity window against the server clock ``now``.

    ``valid_from`` defaults to now; a slightly early ``valid_from`` (clock skew) is moved to now. Windows that
    start or end in the past, or end before they start, are rejected.
    """
    _require_aware(now, "now")
    start = now if valid_from is None else valid_from
    _require_aware(start, "valid_from")
    if start < now - CLOCK_SKEW:
        raise InvalidGrant("valid_from is in the past; a consent cannot be back-dated")
    start = max(start, now)
    if valid_until is not None:
        _require_aware(valid_until, "valid_until")
        if valid_until <= now:
            raise InvalidGrant("valid_until is in the past")
        if valid_until <= start:
            raise InvalidGrant("valid_until must be after valid_from")
    return Window(start, valid_until)


def new_grant(
    *,
    id: int,
    subject_id: int,
    scope: Scope,
    now: datetime,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    granularity: Granularity | str = Granularity.GENERALIZED,
) -> Grant:
    window = validate_window(now, valid_from, valid_until)
    return Grant(
        id=id,
        subject_id=subject_id,
        scope=scope,
        granularity=parse_granularity(granularity),
        valid_from=window.valid_from,
        valid_until=window.valid_until,
    )


def parse_granularity(value: Granularity | str) -> Granularity:
    try:
        return Granularity(value)
    except ValueError:
        raise InvalidGrant(f"granularity must be one of {', '.join(g.value for g in Granularity)}") from None


def withdraw(grant: Grant, now: datetime) -> Grant:
    _require_aware(now, "now")
    if grant.state is not GrantState.ACTIVE:
        raise InvalidGrant(f"grant is {grant.state.value}, not active")
    return replace(grant, state=GrantState.WITHDRAWN, withdrawn_at=now)


def expire(grant: Grant, now: datetime) -> Grant:
    _require_aware(now, "now")
    if not grant.lapsed(now):
        raise InvalidGrant("grant has not reached valid_until")
    return replace(grant, state=GrantState.EXPIRED)


def renew(grant: Grant, now: datetime, valid_until: datetime | None) -> Grant:
    """Move the end of a running grant's window (``None``: until withdrawn).

    A withdrawn or lapsed grant cannot be renewed (a new grant is needed), so past evaluations never change.
    """
    _require_aware(now, "now")
    if grant.state is not GrantState.ACTIVE or grant.lapsed(now):
        raise InvalidGrant("only a running grant can be renewed; grant consent again instead")
    window = validate_window(now, max(grant.valid_from, now), valid_until)
    return replace(grant, valid_until=window.valid_until)


def is_permitted(
    grants: Iterable[Grant],
    *,
    subject_id: int,
    field: FieldRef,
    partner: PartnerRef,
    purpose: str,
    at: datetime,
    granularity: Granularity = Granularity.GENERALIZED,
) -> bool:
    """Whether ``subject_id`` permitted ``partner`` to use ``field`` for ``purpose`` at ``granularity`` at
    time ``at``. Default deny: without a grant in force that covers all of it, the answer is no."""
    _require_aware(at, "at")
    level = granularity.level
    return any(
        g.subject_id == subject_id
        and g.granularity.level >= level
        and g.in_force(at)
        and g.scope.covers(field, partner, purpose)
        for g in grants
    )
