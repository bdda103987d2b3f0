"""The collaboration dashboard: how the operator and each partner work together, as time series.

Per partner and per event contract: deliveries (success rate, latency p50/p99 against the contract's
requirement, retries, dead letters); per partner and data contract with a decision service: real-time
decisions made; and joint outcomes, i.e. outcome events the operator publishes under a contract whose schema
links them to the decision they answer (an ``x-decision-ref`` field: "renewal offer accepted" naming the
real-time decision that proposed it).

What each side sees:

- The steward (operator) sees every number exactly, bucketed by minute, hour or day.
- A partner sees the deliveries to its own endpoint exactly (they describe its systems, not customers) and
  the events it produced. Numbers about customers (customers decided, customers with a joint outcome) reach
  it only as differentially private releases it asks for (`release`): each covers the time since its
  previous release under that contract, counts each customer at most once per number (L1 sensitivity 2 for
  the pair), adds Laplace noise through OpenDP, suppresses counts below the contract's ``k_min``, is charged
  to the (partner, purpose) privacy budget like a job's release, and is stored, so looking again costs
  nothing and no release is ever averaged away.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import opendp.prelude as dp
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataspace.agreements import budget, contracts
from dataspace.agreements.models import Contract, PrivacyBudget
from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.errors import ConcurrentChange, Conflict, Forbidden, InvalidInput, NotFound
from dataspace.events.contract_models import BusinessEvent, CollaborationRelease, EventContract, EventDelivery
from dataspace.events.contracts import decision_refs
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from dataspace.realtime.models import RealtimeDecision

dp.enable_features("contrib")

BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
DEFAULT_SPAN = {"minute": timedelta(hours=1), "hour": timedelta(days=1), "day": timedelta(days=30)}
MAX_BUCKETS = 2000
RELEASE_EPSILON = 0.2  # per release: both counts together (the Laplace vector mechanism, L1 sensitivity 2)
SENSITIVITY = 2  # one customer moves each of the two counts by at most one
_MAP_SLACK = 1e-9
DECIDING = ("approved", "revoked")  # contract statuses under which decisions were (or are) made


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    bucket: str

    @property
    def seconds(self) -> int:
        return BUCKETS[self.bucket]

    def start_of(self, at: datetime) -> datetime:
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        epoch = int(at.timestamp())
        return datetime.fromtimestamp(epoch - epoch % self.seconds, tz=UTC)

    def starts(self) -> list[datetime]:
        first = self.start_of(self.since)
        count = math.ceil((self.until - first).total_seconds() / self.seconds)
        return [first + timedelta(seconds=i * self.seconds) for i in range(max(count, 1))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "bucket": self.bucket,
            "buckets": [t.isoformat() for t in self.starts()],
        }


def _aware(at: datetime) -> datetime:
    """A time without an offset is UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def window(*, since: datetime | None = None, until: datetime | None = None, bucket: str = "hour") -> Window:
    """The dashboard's time range cut into buckets (default: the last hour, day or 30 days up to now, for
    minute, hour or day buckets)."""
    if bucket not in BUCKETS:
        raise InvalidInput(f"bucket must be one of {sorted(BUCKETS)}")
    until = _aware(until) if until is not None else utcnow()
    try:
        since = _aware(since) if since is not None else until - DEFAULT_SPAN[bucket]
    except OverflowError:
        raise InvalidInput("until is too early") from None
    if since >= until:
        raise InvalidInput("since must be before until")
    w = Window(since, until, bucket)
    if (until - w.start_of(since)).total_seconds() / w.seconds > MAX_BUCKETS:
        raise InvalidInput(f"at most {MAX_BUCKETS} buckets: choose a larger bucket or a shorter range")
    return w


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# --- deliveries ---------------------------------------------------------------------------------------
def _delivery_stats(rows: list[Any]) -> dict[str, Any]:
    latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
    delivered = sum(r.status == "delivered" for r in rows)
    dead = sum(r.status == "dead" for r in rows)
    return {
        "events": len(rows),
        "delivered": delivered,
        "pending": sum(r.status == "pending" for r in rows),
        "dead": dead,
        "retries": sum(max(r.attempts - 1, 0) for r in rows),
        "replays": sum(r.replays for r in rows),
        "success_rate": _rate(delivered, delivered + dead),  # of the settled deliveries
        "latency_p50_ms": _pct(latencies, 0.5),
        "latency_p99_ms": _pct(latencies, 0.99),
        "within_requirement": sum(bool(r.within_requirement) for r in rows),
    }


def _deliveries(session: Session, w: Window, *, partner_id: int | None) -> list[dict[str, Any]]:
    stmt = select(
        EventDelivery.contract_id,
        EventDelivery.partner_id,
        EventDelivery.status,
        EventDelivery.attempts,
        EventDelivery.replays,
        EventDelivery.latency_ms,
        EventDelivery.within_requirement,
        EventDelivery.created_at,
        EventDelivery.dropped_fields,
    ).where(EventDelivery.created_at >= w.since, EventDelivery.created_at < w.until)
    if partner_id is not None:
        stmt = stmt.where(EventDelivery.partner_id == partner_id)
    groups: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for row in session.execute(stmt):
        groups[(row.contract_id, row.partner_id)].append(row)
    contracts_by_id = _event_contracts(session, {c for c, _ in groups})
    partners = _partners(session, {p for _, p in groups})
    out = []
    for (contract_id, pid), rows in sorted(groups.items()):
        contract = contracts_by_id[contract_id]
        by_bucket: dict[datetime, list[Any]] = defaultdict(list)
        for r in rows:
            by_bucket[w.start_of(r.created_at)].append(r)
        series = []
        for t in w.starts():
            s = _delivery_stats(by_bucket.get(t, []))
            series.append(
                {
                    "t": t.isoformat(),
                    **{k: s[k] for k in ("events", "delivered", "dead", "retries", "success_rate")},
                    "latency_p50_ms": s["latency_p50_ms"],
                    "latency_p99_ms": s["latency_p99_ms"],
                }
            )
        out.append(
            {
                **_partner_fields(partners, pid),
                "contract_id": contract_id,
                "event_type": contract.event_type,
                "version": contract.version,
                "latency_requirement_ms": contract.latency_ms,
                "totals": _delivery_stats(rows),
                "series": series,
            }
        )
        if partner_id is None:
            # The steward's view only: how often each customer-data field was left out for lack of consent
            # (names and counts: how many customers did not consent is not the partner's to know).
            dropped: dict[str, int] = defaultdict(int)
            for r in rows:
                for name in r.dropped_fields or []:
                    dropped[name] += 1
            out[-1]["dropped_fields"] = dict(sorted(dropped.items()))
    return out


def _event_contracts(session: Session, ids: Iterable[int]) -> dict[int, EventContract]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    return {c.id: c for c in session.scalars(select(EventContract).where(EventContract.id.in_(ids)))}


def _partners(session: Session, ids: Iterable[int]) -> dict[int, Partner]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Partner).where(Partner.id.in_(ids)))}


def _partner_fields(partners: dict[int, Partner], partner_id: int) -> dict[str, Any]:
    p = partners.get(partner_id)
    return {
        "partner_id": partner_id,
        "partner_key": p.key if p else None,
        "partner_name": p.name if p else None,
        "partner_i18n": (p.i18n or {}) if p else {},
    }


# --- decisions and joint outcomes (exact: the operator's view) -----------------------------------------
def _decisions(session: Session, w: Window) -> list[dict[str, Any]]:
    rows = session.execute(
        select(
            RealtimeDecision.partner_id,
            RealtimeDecision.contract_id,
            RealtimeDecision.event_type,
            RealtimeDecision.outcome,
            RealtimeDecision.label,
            RealtimeDecision.created_at,
        ).where(RealtimeDecision.created_at >= w.since, RealtimeDecision.created_at < w.until)
    ).all()
    groups: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for r in rows:
        groups[(r.partner_id, r.contract_id)].append(r)
    partners = _partners(session, {p for p, _ in groups})
    titles: dict[int, str | None] = {
        row.id: row.title
        for row in session.execute(
            select(Contract.id, Contract.title).where(Contract.id.in_(sorted({c for _, c in groups})))
        )
    }
    out = []
    for (pid, contract_id), mine in sorted(groups.items()):
        by_bucket: dict[datetime, list[Any]] = defaultdict(list)
        labels: dict[str, int] = defaultdict(int)
        triggers: dict[str, int] = defaultdict(int)
        for r in mine:
            by_bucket[w.start_of(r.created_at)].append(r)
            triggers[r.event_type] += 1
            if r.outcome == "decided" and r.label is not None:
                labels[r.label] += 1
        out.append(
            {
                **_partner_fields(partners, pid),
                "contract_id": contract_id,
                "title": titles.get(contract_id),
                "totals": {
                    "requested": len(mine),
                    "decided": sum(r.outcome == "decided" for r in mine),
                    "not_permitted": sum(r.outcome == "not_permitted" for r in mine),
                    "labels": dict(sorted(labels.items())),
                    "triggers": dict(sorted(triggers.items())),
                },
                "series": [
                    {
                        "t": t.isoformat(),
                        "decided": sum(r.outcome == "decided" for r in by_bucket.get(t, [])),
                        "not_permitted": sum(r.outcome == "not_permitted" for r in by_bucket.get(t, [])),
                    }
                    for t in w.starts()
                ],
            }
        )
    return out


def _outcome_contracts(session: Session) -> dict[int, tuple[EventContract, list[str]]]:
    """Event contract versions whose schema links an event to a decision."""
    out = {}
    for c in session.scalars(select(EventContract).where(EventContract.producer_partner_id.is_(None))):
        refs = decision_refs(c.schema)
        if refs:
            out[c.id] = (c, refs)
    return out


@dataclass(frozen=True)
class _Outcome:
    event_contract_id: int
    event_type: str
    received_at: datetime
    decision: RealtimeDecision


def _linked_outcomes(
    session: Session, since: datetime, until: datetime, *, contract_id: int | None = None
) -> list[_Outcome]:
    """Outcome events received in [since, until), each with the decided decision it names (under
    ``contract_id`` only, when given). An event naming several decisions counts for each."""
    linked = _outcome_contracts(session)
    if not linked:
        return []
    events = session.execute(
        select(
            BusinessEvent.contract_id, BusinessEvent.event_type, BusinessEvent.received_at, BusinessEvent.data
        ).where(
            BusinessEvent.contract_id.in_(sorted(linked)),
            BusinessEvent.received_at >= since,
            BusinessEvent.received_at < until,
        )
    ).all()
    wanted: list[tuple[Any, int]] = []
    for e in events:
        for name in linked[e.contract_id][1]:
            value = (e.data or {}).get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                wanted.append((e, value))
    ids = sorted({d for _, d in wanted})
    decisions: dict[int, RealtimeDecision] = {}
    for i in range(0, len(ids), 500):
        stmt = select(RealtimeDecision).where(RealtimeDecision.id.in_(ids[i : i + 500]))
        if contract_id is not None:
            stmt = stmt.where(RealtimeDecision.contract_id == contract_id)
        decisions.update({d.id: d for d in session.scalars(stmt)})
    return [
        _Outcome(e.contract_id, e.event_type, e.received_at, decisions[d])
        for e, d in wanted
        if d in decisions and decisions[d].outcome == "decided"
    ]


def _outcomes(session: Session, w: Window) -> list[dict[str, Any]]:
    found = _linked_outcomes(session, w.since, w.until)
    groups: dict[tuple[int, int, int, str], list[_Outcome]] = defaultdict(list)
    for o in found:
        groups[(o.decision.partner_id, o.decision.contract_id, o.event_contract_id, o.event_type)].append(o)
    partners = _partners(session, {k[0] for k in groups})
    decided: dict[int, int] = {
        cid: int(n)
        for cid, n in session.execute(
            select(RealtimeDecision.contract_id, func.count())
            .where(
                RealtimeDecision.outcome == "decided",
                RealtimeDecision.created_at >= w.since,
                RealtimeDecision.created_at < w.until,
            )
            .group_by(RealtimeDecision.contract_id)
        )
    }
    out = []
    for (pid, contract_id, event_contract_id, event_type), mine in sorted(groups.items()):
        by_bucket: dict[datetime, int] = defaultdict(int)
        for o in mine:
            by_bucket[w.start_of(o.received_at)] += 1
        answered = len({o.decision.id for o in mine})
        out.append(
            {
                **_partner_fields(partners, pid),
                "contract_id": contract_id,  # the data contract whose decisions these events answer
                "event_contract_id": event_contract_id,
                "event_type": event_type,
                "totals": {
                    "outcomes": len(mine),
                    "decisions_answered": answered,
                    "conversion": _rate(answered, int(decided.get(contract_id, 0))),
                },
                "series": [{"t": t.isoformat(), "outcomes": by_bucket.get(t, 0)} for t in w.starts()],
            }
        )
    return out


def steward_view(session: Session, w: Window) -> dict[str, Any]:
    """Every partner, every contract, exactly (the operator's own records)."""
    return {
        "window": w.as_dict(),
        "deliveries": _deliveries(session, w, partner_id=None),
        "decisions": _decisions(session, w),
        "outcomes": _outcomes(session, w),
    }


# --- the partner's view ------------------------------------------------------------------------------
def _own_partner(principal: Principal) -> int:
    if principal.role != "partner" or principal.partner_id is None:
        raise Forbidden()
    return principal.partner_id


def _published(session: Session, w: Window, partner_id: int) -> list[dict[str, Any]]:
    """The events the partner produced (its own records), per contract version."""
    rows = session.execute(
        select(BusinessEvent.contract_id, BusinessEvent.received_at).where(
            BusinessEvent.producer == f"partner:{partner_id}",
            BusinessEvent.received_at >= w.since,
            BusinessEvent.received_at < w.until,
        )
    ).all()
    groups: dict[int, list[datetime]] = defaultdict(list)
    for contract_id, at in rows:
        groups[contract_id].append(at)
    by_id = _event_contracts(session, groups)
    out = []
    for contract_id, times in sorted(groups.items()):
        counts: dict[datetime, int] = defaultdict(int)
        for at in times:
            counts[w.start_of(at)] += 1
        out.append(
            {
                "contract_id": contract_id,
                "event_type": by_id[contract_id].event_type,
                "version": by_id[contract_id].version,
                "published": len(times),
                "series": [{"t": t.isoformat(), "published": counts.get(t, 0)} for t in w.starts()],
            }
        )
    return out


def _release_dict(r: CollaborationRelease) -> dict[str, Any]:
    return {
        "id": r.id,
        "contract_id": r.contract_id,
        "period_start": r.period_start.isoformat(),
        "period_end": r.period_end.isoformat(),
        "decided": r.decided,
        "outcomes": r.outcomes,
        "epsilon": r.micro_epsilon / contracts.MICRO,
        "noise_scale": SENSITIVITY / (r.micro_epsilon / contracts.MICRO) if r.micro_epsilon else None,
        "mechanism": r.mechanism,
        "created_at": r.created_at.isoformat(),
    }


def _decision_contracts(session: Session, partner_id: int) -> list[Contract]:
    return list(
        session.scalars(
            select(Contract)
            .where(
                Contract.partner_id == partner_id,
                Contract.decision_service.is_not(None),
                Contract.status.in_(DECIDING),
            )
            .order_by(Contract.id)
        )
    )


def partner_view(session: Session, w: Window, *, principal: Principal) -> dict[str, Any]:
    """What a partner may see of the collaboration (module docstring): deliveries to its endpoint and its own
    events exactly; customers decided and joint outcomes only as its stored DP releases."""
    partner_id = _own_partner(principal)
    releases = []
    for c in _decision_contracts(session, partner_id):
        spent = session.scalar(
            select(PrivacyBudget).where(
                PrivacyBudget.partner_id == partner_id, PrivacyBudget.purpose_key == c.purpose_key
            )
        )
        rows = session.scalars(
            select(CollaborationRelease)
            .where(CollaborationRelease.contract_id == c.id)
            .order_by(CollaborationRelease.period_start)
        )
        releases.append(
            {
                "contract_id": c.id,
                "title": c.title,
                "purpose": c.purpose_key,
                "status": c.status,
                "k_min": c.k_min,
                "release_epsilon": RELEASE_EPSILON,
                "epsilon_remaining": (spent.micro_epsilon_total - spent.micro_epsilon_spent) / contracts.MICRO
                if spent is not None
                else None,
                "releases": [_release_dict(r) for r in rows],
            }
        )
    return {
        "window": w.as_dict(),
        "deliveries": _deliveries(session, w, partner_id=partner_id),
        "published": _published(session, w, partner_id),
        "customer_numbers": releases,
    }


def _laplace(counts: list[int], epsilon: float) -> tuple[float, list[int]]:
    meas = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=SENSITIVITY / epsilon
    )
    charged = float(meas.map(SENSITIVITY))  # type: ignore[no-untyped-call]
    if charged > epsilon + _MAP_SLACK:
        raise Conflict("the release mechanism would cost more than its epsilon")
    return charged, [int(x) for x in meas(counts)]


def exact_counts(session: Session, contract_id: int, since: datetime, until: datetime) -> tuple[int, int]:
    """Customers decided under the contract in [since, until), and customers with a joint outcome (an outcome
    event received in the period naming one of the contract's decisions): each customer counted once."""
    decided = session.scalar(
        select(func.count(func.distinct(RealtimeDecision.subject_id))).where(
            RealtimeDecision.contract_id == contract_id,
            RealtimeDecision.outcome == "decided",
            RealtimeDecision.created_at >= since,
            RealtimeDecision.created_at < until,
        )
    )
    outcomes = {o.decision.subject_id for o in _linked_outcomes(session, since, until, contract_id=contract_id)}
    return int(decided or 0), len(outcomes)


def release(session: Session, *, principal: Principal, contract_id: int, now: datetime | None = None) -> dict[str, Any]:
    """A new DP release of the customer numbers under one of the partner's decision contracts, covering the
    time since its previous release (or since the contract was approved), charged to its budget
    (``BudgetExceeded``, and nothing released, when the budget cannot pay)."""
    partner_id = _own_partner(principal)
    contract = session.get(Contract, contract_id)
    if contract is None or contract.partner_id != partner_id or contract.decision_service is None:
        raise NotFound("no such contract with a decision service")
    if contract.status not in DECIDING:
        raise Conflict("the contract was never approved: it has made no decisions to release")
    now = now or utcnow()
    last = session.scalar(
        select(func.max(CollaborationRelease.period_end)).where(CollaborationRelease.contract_id == contract_id)
    )
    start = last or contract.decided_at or contract.created_at
    if start >= now:
        raise Conflict("nothing new to release since the previous release")
    decided, outcomes = exact_counts(session, contract_id, start, now)
    micro = contracts.to_micro(RELEASE_EPSILON)
    budget.charge(session, partner_id=partner_id, purpose_key=contract.purpose_key, micro=micro)
    charged, (noisy_decided, noisy_outcomes) = _laplace([decided, outcomes], RELEASE_EPSILON)
    row = CollaborationRelease(
        partner_id=partner_id,
        contract_id=contract_id,
        period_start=start,
        period_end=now,
        decided=noisy_decided if noisy_decided >= contract.k_min else None,
        outcomes=noisy_outcomes if noisy_outcomes >= contract.k_min else None,
        micro_epsilon=micro,
        mechanism="laplace/l1-count-vector",
        requested_by=principal.actor,
        created_at=now,
    )
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise ConcurrentChange("another release of this contract is being made; retry") from exc
    record_event(
        session,
        actor=principal,
        action="collaboration.released",
        target=f"contract:{contract_id}",
        details={"release_id": row.id, "epsilon": charged, "period_end": now.isoformat()},
    )
    return _release_dict(row)
