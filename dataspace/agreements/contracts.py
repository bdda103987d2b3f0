"""Data contracts: a partner proposes, stewards approve (two different stewards when a field is sensitive).

A contract is usable for jobs only while it is approved and inside its validity window; past
``valid_until`` it reads as ``expired`` (derived from the clock, so no sweeper is needed to be correct).
Revoking one also shreds its linked contributions, so it lives above the linkage service:
``dataspace.jobs.revocation``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.agreements.models import Contract, ContractApproval, PrivacyBudget
from dataspace.audit import record_event
from dataspace.catalog.models import Field, Purpose
from dataspace.db import utcnow
from dataspace.emission import check_against_catalog, parse_features
from dataspace.emission.service import catalog_fields
from dataspace.emission.specs import Identity
from dataspace.errors import Conflict, Forbidden, InvalidInput, NotFound
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from sandbox import DecisionSchema

MIN_K = 2
MAX_K = 1_000_000
MAX_EPSILON_PER_RELEASE = 10.0
MAX_VALIDITY = timedelta(days=3 * 366)
MAX_LABELS = 64
MAX_LABEL_LENGTH = 64
MAX_DECISION_MAGNITUDE = 1e9  # numeric decisions lie in [min, max] with |min|, |max| <= this
# Every (partner, purpose) starts with this much epsilon when its first contract is approved; a steward
# can change it with ``set_budget``.
DEFAULT_EPSILON_TOTAL = 10.0
MICRO = 1_000_000


@dataclass(frozen=True)
class ContractProposal:
    purpose: str
    features: list[dict[str, Any]]
    decision_schema: dict[str, Any]
    k_min: int
    epsilon_per_release: float
    valid_until: datetime
    valid_from: datetime | None = None
    title: str = ""
    decision_service: dict[str, Any] | None = None  # see `decision_service_of`


def decision_schema_of(raw: Mapping[str, Any]) -> DecisionSchema:
    """``{"labels": [...]}`` or ``{"min": a, "max": b}`` (``minimum``/``maximum`` also accepted)."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("decision_schema must be an object")
    labels = raw.get("labels")
    lo = raw.get("min", raw.get("minimum"))
    hi = raw.get("max", raw.get("maximum"))
    try:
        if labels is not None:
            if lo is not None or hi is not None:
                raise InvalidInput("decision_schema has either labels or min/max, not both")
            if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS:
                raise InvalidInput(f"decision_schema.labels must be a list of 1 to {MAX_LABELS} labels")
            if not all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_LENGTH for x in labels):
                raise InvalidInput(f"labels must be non-empty strings of at most {MAX_LABEL_LENGTH} characters")
            return DecisionSchema.of_labels(*labels)
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in (lo, hi)):
            raise InvalidInput("decision_schema needs 'labels' or numeric 'min' and 'max'")
        # A bounded range keeps every DP release's noise scale finite (the sum's sensitivity is the larger
        # bound): without it a range of +-1e308 is accepted and every release of the job fails.
        try:
            low, high = float(lo), float(hi)
        except OverflowError:  # an integer beyond any float
            low = high = math.inf
        if not all(math.isfinite(v) and abs(v) <= MAX_DECISION_MAGNITUDE for v in (low, high)):
            raise InvalidInput(
                f"decision_schema min and max must be finite numbers within +-{MAX_DECISION_MAGNITUDE:g}"
            )
        if not low < high:
            raise InvalidInput("decision_schema min must be less than max")
        return DecisionSchema.number_range(low, high)
    except ValueError as exc:
        raise InvalidInput(f"decision_schema: {exc}") from None


MAX_DECISION_EVENTS = 32
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def decision_service_of(raw: Any) -> dict[str, Any] | None:
    """A contract's real-time decision service: ``{"events": ["policy.renewal_due", ...]}``, the event types
    that may ask the partner's model for one customer's decision (``dataspace.realtime``); None: none."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"events"}:
        raise InvalidInput('decision_service must be an object {"events": [event types]}')
    events = raw.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_DECISION_EVENTS:
        raise InvalidInput(f"decision_service.events must list 1 to {MAX_DECISION_EVENTS} event types")
    if not all(isinstance(e, str) and len(e) <= 128 and _EVENT_TYPE.fullmatch(e) for e in events):
        raise InvalidInput("decision_service.events: each must be a dotted event type such as policy.renewal_due")
    return {"events": sorted(set(events))}


def effective_status(contract: Contract, now: datetime) -> str:
    if contract.status in {"proposed", "approved"} and now >= contract.valid_until:
        return "expired"
    return contract.status


def require_usable(contract: Contract, now: datetime) -> None:
    """Refuse work under a contract that is not approved or not in its validity window."""
    status = effective_status(contract, now)
    if status != "approved":
        raise Conflict(f"contract {contract.id} is {status}, not approved")
    if now < contract.valid_from:
        raise Conflict(f"contract {contract.id} is not valid before {contract.valid_from.isoformat()}")


def _partner(session: Session, principal: Principal) -> Partner:
    if principal.role != "partner" or principal.partner_id is None:
        raise Forbidden()
    partner = session.get(Partner, principal.partner_id)
    if partner is None or partner.status != "active":
        raise Forbidden()
    return partner


def field_sensitivity(session: Session, keys: list[str]) -> dict[str, str]:
    return dict(session.execute(select(Field.key, Field.sensitivity).where(Field.key.in_(keys))).all())


def propose(session: Session, *, principal: Principal, proposal: ContractProposal) -> Contract:
    partner = _partner(session, principal)
    now = utcnow()
    if session.get(Purpose, proposal.purpose) is None:
        raise InvalidInput(f"unknown purpose {proposal.purpose!r}")
    if not isinstance(proposal.features, list):
        raise InvalidInput("features must be a list")
    specs = parse_features(proposal.features)
    check_against_catalog(specs, catalog_fields(session, [s.field for s in specs]))
    decision_schema_of(proposal.decision_schema)
    decision_service = decision_service_of(proposal.decision_service)
    k = proposal.k_min
    if isinstance(k, bool) or not isinstance(k, int) or not MIN_K <= k <= MAX_K:
        raise InvalidInput(f"k_min must be an integer between {MIN_K} and {MAX_K}")
    eps = proposal.epsilon_per_release
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps):
        raise InvalidInput("epsilon_per_release must be a number")
    if not 0 < eps <= MAX_EPSILON_PER_RELEASE:
        raise InvalidInput(f"epsilon_per_release must be in (0, {MAX_EPSILON_PER_RELEASE:g}]")
    valid_from = proposal.valid_from or now
    valid_until = proposal.valid_until
    if valid_from.tzinfo is None or valid_until.tzinfo is None:
        raise InvalidInput("validity times must carry a time zone")
    if valid_until <= max(valid_from, now):
        raise InvalidInput("valid_until must be in the future and after valid_from")
    if valid_until - valid_from > MAX_VALIDITY:
        raise InvalidInput("a contract may be valid for at most three years")
    keys = sorted({s.field for s in specs})
    sensitive = any(v == "sensitive" for v in field_sensitivity(session, keys).values())
    contract = Contract(
        partner_id=partner.id,
        purpose_key=proposal.purpose,
        title=proposal.title[:200],
        features=[dict(f) for f in proposal.features],
        decision_schema=dict(proposal.decision_schema),
        decision_service=decision_service,
        k_min=k,
        epsilon_per_release=float(eps),
        valid_from=valid_from,
        valid_until=valid_until,
        sensitive=sensitive,
        required_approvals=2 if sensitive else 1,
        status="proposed",
        proposed_by=principal.actor,
        created_at=now,
    )
    session.add(contract)
    session.flush()
    record_event(
        session,
        actor=principal,
        action="contract.proposed",
        target=f"contract:{contract.id}",
        details={"partner_key": partner.key, "purpose": proposal.purpose, "fields": keys, "sensitive": sensitive},
    )
    return contract


def get_owned(session: Session, *, principal: Principal, contract_id: int) -> Contract:
    """A partner's own contract; anybody else's is "not found"."""
    contract = session.get(Contract, contract_id)
    if contract is None or principal.partner_id is None or contract.partner_id != principal.partner_id:
        raise NotFound("no such contract")
    return contract


def get(session: Session, *, contract_id: int) -> Contract:
    contract = session.get(Contract, contract_id)
    if contract is None:
        raise NotFound("no such contract")
    return contract


def list_for_partner(session: Session, *, principal: Principal) -> list[Contract]:
    if principal.partner_id is None:
        return []
    stmt = select(Contract).where(Contract.partner_id == principal.partner_id).order_by(Contract.id)
    return list(session.scalars(stmt))


def list_all(session: Session, *, status: str | None = None) -> list[Contract]:
    stmt = select(Contract).order_by(Contract.id)
    if status is not None:
        stmt = stmt.where(Contract.status == status)
    return list(session.scalars(stmt))


def approvals(session: Session, contract_id: int) -> list[ContractApproval]:
    stmt = select(ContractApproval).where(ContractApproval.contract_id == contract_id).order_by(ContractApproval.id)
    return list(session.scalars(stmt))


def lock(session: Session, contract_id: int) -> Contract:
    """The contract, locked for this transaction (``NotFound`` if absent)."""
    contract = session.scalar(select(Contract).where(Contract.id == contract_id).with_for_update())
    if contract is None:
        raise NotFound("no such contract")
    return contract


def require_steward(principal: Principal) -> None:
    """Only a steward decides on a contract."""
    if principal.role != "steward":
        raise Forbidden()


def approve(session: Session, *, principal: Principal, contract_id: int) -> Contract:
    """Record one steward's approval; the contract becomes approved once enough distinct stewards agree."""
    require_steward(principal)
    now = utcnow()
    contract = lock(session, contract_id)
    status = effective_status(contract, now)
    if status != "proposed":
        raise Conflict(f"contract is {status}; only a proposed contract can be approved")
    if principal.actor == contract.proposed_by:
        raise Forbidden("the proposer of a contract cannot approve it")
    done = {a.steward for a in approvals(session, contract.id)}
    if principal.actor in done:
        raise Conflict("you already approved this contract; another steward must approve it too")
    # The catalog may have tightened since the proposal: approve only what its promise allows today.
    specs = parse_features(contract.features)
    check_against_catalog(specs, catalog_fields(session, [s.field for s in specs]))
    session.add(ContractApproval(contract_id=contract.id, steward=principal.actor, at=now))
    session.flush()
    count = len(done) + 1
    if count >= contract.required_approvals:
        contract.status = "approved"
        contract.decided_at = now
        contract.decided_by = principal.actor
        _ensure_budget(session, contract.partner_id, contract.purpose_key)
    session.flush()
    record_event(
        session,
        actor=principal,
        action="contract.approved" if contract.status == "approved" else "contract.approval_recorded",
        target=f"contract:{contract.id}",
        details={"approvals": count, "required": contract.required_approvals},
    )
    return contract


def reject(session: Session, *, principal: Principal, contract_id: int, reason: str = "") -> Contract:
    require_steward(principal)
    now = utcnow()
    contract = lock(session, contract_id)
    status = effective_status(contract, now)
    if status != "proposed":
        raise Conflict(f"contract is {status}; only a proposed contract can be rejected")
    contract.status = "rejected"
    contract.decided_at = now
    contract.decided_by = principal.actor
    contract.decision_reason = reason[:1000]
    session.flush()
    record_event(session, actor=principal, action="contract.rejected", target=f"contract:{contract.id}")
    return contract


# --- privacy budgets ------------------------------------------------------------------------------------
def to_micro(epsilon: float) -> int:
    """Epsilon in integer micro-units, rounded up (a charge is never under-counted)."""
    return math.ceil(epsilon * MICRO - 1e-6)


def _ensure_budget(session: Session, partner_id: int, purpose_key: str) -> None:
    exists = session.scalar(
        select(func.count())
        .select_from(PrivacyBudget)
        .where(PrivacyBudget.partner_id == partner_id, PrivacyBudget.purpose_key == purpose_key)
    )
    if not exists:
        session.add(
            PrivacyBudget(
                partner_id=partner_id,
                purpose_key=purpose_key,
                micro_epsilon_total=to_micro(DEFAULT_EPSILON_TOTAL),
                micro_epsilon_spent=0,
                updated_at=utcnow(),
            )
        )
        session.flush()


def set_budget(
    session: Session, *, principal: Principal, partner_key: str, purpose_key: str, epsilon_total: float
) -> PrivacyBudget:
    """Set a (partner, purpose) budget; it can never go below what was already spent."""
    require_steward(principal)
    if isinstance(epsilon_total, bool) or not math.isfinite(epsilon_total) or not 0 <= epsilon_total <= 1000:
        raise InvalidInput("epsilon_total must be between 0 and 1000")
    partner = session.scalar(select(Partner).where(Partner.key == partner_key))
    if partner is None:
        raise NotFound("no such partner")
    if session.get(Purpose, purpose_key) is None:
        raise NotFound("no such purpose")
    _ensure_budget(session, partner.id, purpose_key)
    budget = session.scalar(
        select(PrivacyBudget)
        .where(PrivacyBudget.partner_id == partner.id, PrivacyBudget.purpose_key == purpose_key)
        .with_for_update()
    )
    assert budget is not None
    total = to_micro(epsilon_total)
    if total < budget.micro_epsilon_spent:
        raise Conflict("the budget cannot be set below the epsilon already spent")
    budget.micro_epsilon_total = total
    budget.updated_at = utcnow()
    session.flush()
    record_event(
        session,
        actor=principal,
        action="privacy_budget.set",
        target=f"partner:{partner.key}",
        details={"purpose": purpose_key, "epsilon_total": total / MICRO},
    )
    return budget


def budgets_for_partner(session: Session, *, partner_id: int) -> list[PrivacyBudget]:
    stmt = select(PrivacyBudget).where(PrivacyBudget.partner_id == partner_id).order_by(PrivacyBudget.purpose_key)
    return list(session.scalars(stmt))


def uses_raw_values(features: list[dict[str, Any]]) -> bool:
    return any(isinstance(s, Identity) for s in parse_features(features))
