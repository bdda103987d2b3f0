"""The registry of business event contracts: proposal, approval by both sides, versioning with a
backward-compatibility check.

What the two companies are promised:

- A contract version is usable (events may be published under it) only once approved by a steward (the
  operator's side) and by every partner it names (the producer, when a partner, and each consumer). The
  proposer's side approves by proposing.
- Every field of the schema has a description (its meaning); a field that carries customer data names the
  catalog field it comes from (``x-catalog-field``, which must exist) and is never required, since a
  customer's consent may drop it from a partner's copy. Only the operator produces customer data.
- A new version of a type is compared with the latest approved one: removed or renamed fields, type or
  constraint changes, new required fields, a changed catalog field or unit, changed parties or purpose are
  *breaking* and need a new major version, approved by both sides again. Added optional fields, a changed
  latency or retry policy are *minor*; descriptions only are a *patch*. A compatible version of an approved
  contract is approved at once (both sides agreed to compatible evolution); a version number lower than the
  change requires is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.catalog.models import Field, Purpose
from dataspace.db import utcnow
from dataspace.errors import Conflict, Forbidden, InvalidInput, NotFound
from dataspace.events.contract_models import EventContract
from dataspace.events.schemas import CONTRACTS as SERVER_EVENTS
from dataspace.partners.models import Partner
from dataspace.principal import Principal

TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
VERSION_PATTERN = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$")
GRANULARITIES = ("generalized", "pseudonymized-raw")
SEVERITY = {"initial": 3, "major": 3, "minor": 2, "patch": 1, "none": 0}
# Keywords whose change alters what is valid: tightening breaks producers, loosening breaks consumers.
CONSTRAINTS = (
    "type",
    "format",
    "const",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "multipleOf",
    "additionalProperties",
    "x-catalog-field",
    "x-unit",
    "x-granularity",
    "x-decision-ref",
)
MAX_FIELDS = 200
OPERATOR = "operator"


@dataclass(frozen=True)
class RetryPolicy:
    backoff_seconds: float = 2.0
    multiplier: float = 2.0
    max_backoff_seconds: float = 3600.0
    max_attempts: int = 8
    dead_letter: bool = True  # False: after the last attempt the delivery is dropped as "dead" all the same

    def delay(self, attempts: int) -> float:
        return float(min(self.backoff_seconds * self.multiplier ** max(attempts - 1, 0), self.max_backoff_seconds))

    @classmethod
    def of(cls, raw: dict[str, Any]) -> RetryPolicy:
        return cls(**raw)


@dataclass
class Proposal:
    event_type: str
    version: str
    title: str
    description: str
    schema: dict[str, Any]
    consumers: list[str]  # partner keys
    producer: str = "operator"  # "operator" or a partner key
    purpose: str | None = None
    latency_ms: int = 5000
    retry: dict[str, Any] = field(default_factory=dict)


# --- the schema itself ------------------------------------------------------------------------------
def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any], bool]]:
    """(path, property schema, required) of every property, depth first."""
    out: list[tuple[str, dict[str, Any], bool]] = []
    required = set(schema.get("required", []))
    for name, prop in (schema.get("properties") or {}).items():
        p = f"{path}.{name}" if path else name
        if not isinstance(prop, dict):
            continue
        out.append((p, prop, name in required))
        if prop.get("type") == "object":
            out += _walk(prop, p)
        items = prop.get("items")
        if prop.get("type") == "array" and isinstance(items, dict) and items.get("type") == "object":
            out += _walk(items, p + "[]")
    return out


REFERENCES = ("$ref", "$dynamicRef", "$anchor", "$dynamicAnchor", "$id")
COMBINATORS = ("anyOf", "oneOf", "allOf", "not", "if", "then", "else", "patternProperties", "dependentSchemas")


def _hidden_fields(node: Any, path: str, *, inside: bool = False) -> list[dict[str, str]]:
    """References (the schema must be self-contained: nothing is fetched, every field is visible) and fields
    declared inside combinators (their meaning would escape the description check)."""
    errors: list[dict[str, str]] = []
    if isinstance(node, list):
        for i, item in enumerate(node):
            errors += _hidden_fields(item, f"{path}[{i}]", inside=inside)
    elif isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}/{key}" if path else key
            if key in REFERENCES:
                errors.append({"path": here, "problem": f"{key} is not allowed: a contract is self-contained"})
            elif key == "properties" and inside:
                errors.append({"path": here, "problem": "declare fields as plain properties, not in combinators"})
            else:
                errors += _hidden_fields(value, here, inside=inside or key in COMBINATORS)
    return errors


def catalog_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Top-level properties carrying customer data: name -> {"field": catalog key, "granularity": ...}."""
    return {
        name: {"field": prop["x-catalog-field"], "granularity": prop.get("x-granularity", "pseudonymized-raw")}
        for name, prop in (schema.get("properties") or {}).items()
        if isinstance(prop, dict) and "x-catalog-field" in prop
    }


def decision_refs(schema: dict[str, Any]) -> list[str]:
    """Top-level properties linking an outcome event to the real-time decision it answers (``x-decision-ref``:
    e.g. ``offer.accepted`` naming the decision that proposed the offer). The operator's own link: kept with
    the stored event (the collaboration dashboard counts joint outcomes from it), never sent to a partner."""
    return [
        name
        for name, prop in (schema.get("properties") or {}).items()
        if isinstance(prop, dict) and prop.get("x-decision-ref") is True
    ]


def check_schema(session: Session, schema: dict[str, Any], *, producer_is_partner: bool) -> None:
    """Refuse a schema that is not valid JSON Schema or breaks the contract rules (module docstring); every
    problem is listed in ``errors``."""
    errors: list[dict[str, str]] = []
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        errors.append({"path": "/".join(map(str, exc.path)) or "(root)", "problem": exc.message})
        raise InvalidInput("the event schema is not valid JSON Schema", extra={"errors": errors}) from None
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        errors.append({"path": "(root)", "problem": "the schema must be an object with properties"})
    errors += _hidden_fields(schema, "")
    props = _walk(schema, "")
    if len(props) > MAX_FIELDS:
        errors.append({"path": "(root)", "problem": f"at most {MAX_FIELDS} fields"})
    for path, prop, required in props:
        if not str(prop.get("description", "")).strip():
            errors.append({"path": path, "problem": "every field needs a description (its meaning)"})
        if "x-unit" in prop and (not isinstance(prop["x-unit"], str) or not prop["x-unit"].strip()):
            errors.append({"path": path, "problem": "x-unit must be a non-empty string"})
        if "x-catalog-field" in prop:
            if not isinstance(prop["x-catalog-field"], str):
                errors.append({"path": path, "problem": "x-catalog-field names a catalog field (a string)"})
                continue
            if "." in path or "[" in path:
                errors.append({"path": path, "problem": "customer-data fields must be top-level properties"})
            if required:
                errors.append({"path": path, "problem": "a customer-data field cannot be required (consent drops it)"})
            if producer_is_partner:
                errors.append({"path": path, "problem": "only the operator produces events with customer data"})
            if prop.get("x-granularity", "pseudonymized-raw") not in GRANULARITIES:
                errors.append({"path": path, "problem": f"x-granularity must be one of {list(GRANULARITIES)}"})
        if "x-decision-ref" in prop:
            if prop["x-decision-ref"] is not True or prop.get("type") != "integer" or "x-catalog-field" in prop:
                errors.append({"path": path, "problem": "x-decision-ref is true on an integer field (a decision id)"})
            if "." in path or "[" in path:
                errors.append({"path": path, "problem": "a decision reference must be a top-level property"})
            if producer_is_partner:
                errors.append({"path": path, "problem": "only the operator links events to its decisions"})
    wanted = {spec["field"] for spec in catalog_fields(schema).values() if isinstance(spec["field"], str)}
    known = set(session.scalars(select(Field.key).where(Field.key.in_(sorted(map(str, wanted)))))) if wanted else set()
    for name, spec in catalog_fields(schema).items():
        if isinstance(spec["field"], str) and spec["field"] not in known:
            errors.append({"path": name, "problem": f"unknown catalog field {spec['field']!r}"})
    if errors:
        raise InvalidInput(f"{len(errors)} problem(s) in the event schema", extra={"errors": errors})


# --- compatibility ----------------------------------------------------------------------------------
def compare(old: EventContract, new: Proposal, new_parties: tuple[int | None, list[int]]) -> list[dict[str, str]]:
    """What changed from ``old`` to ``new``, each with its severity (major|minor|patch)."""
    changes: list[dict[str, str]] = []

    def add(severity: str, path: str, what: str) -> None:
        changes.append({"severity": severity, "path": path, "change": what})

    before = {p: (prop, req) for p, prop, req in _walk(old.schema, "")}
    after = {p: (prop, req) for p, prop, req in _walk(new.schema, "")}
    for path, (prop, req) in before.items():
        if path not in after:
            add("major", path, "field removed or renamed")
            continue
        nprop, nreq = after[path]
        for key in CONSTRAINTS:
            if prop.get(key) != nprop.get(key):
                add("major", path, f"{key} changed from {prop.get(key)!r} to {nprop.get(key)!r}")
        if "enum" in prop or "enum" in nprop:
            gone = [v for v in prop.get("enum", []) if v not in nprop.get("enum", [])]
            added = [v for v in nprop.get("enum", []) if v not in prop.get("enum", [])]
            if gone or ("enum" in nprop and "enum" not in prop):
                add("major", path, f"allowed values removed: {gone}")
            elif added:
                add("minor", path, f"allowed values added: {added}")
        if nreq and not req:
            add("major", path, "field became required")
        elif req and not nreq:
            add("major", path, "field became optional (consumers relied on it)")
        if prop.get("description") != nprop.get("description"):
            add("patch", path, "description changed")
    for path, (_prop, req) in after.items():
        if path not in before:
            add("major" if req else "minor", path, "new required field" if req else "new optional field")
    producer, consumers = new_parties
    if (old.producer_partner_id, sorted(old.consumer_partner_ids)) != (producer, sorted(consumers)):
        add("major", "(contract)", "producer or consumers changed")
    if old.purpose_key != new.purpose:
        add("major", "(contract)", "purpose changed")
    if old.latency_ms != new.latency_ms:
        add("minor", "(contract)", f"latency requirement {old.latency_ms} -> {new.latency_ms} ms")
    if old.retry != _retry(new.retry):
        add("minor", "(contract)", "retry policy changed")
    if (old.title, old.description) != (new.title, new.description):
        add("patch", "(contract)", "title or description changed")
    return changes


def required_change(changes: list[dict[str, str]]) -> str:
    worst = max((SEVERITY[c["severity"]] for c in changes), default=0)
    return {3: "major", 2: "minor", 1: "patch", 0: "none"}[worst]


def _retry(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        policy = RetryPolicy(**raw)
    except TypeError as exc:
        raise InvalidInput(
            "retry: unknown key; use backoff_seconds, multiplier, max_backoff_seconds, max_attempts, dead_letter"
        ) from exc
    if not (0.1 <= policy.backoff_seconds <= 3600 and 1 <= policy.multiplier <= 10):
        raise InvalidInput("retry: backoff_seconds 0.1..3600, multiplier 1..10")
    if not (policy.backoff_seconds <= policy.max_backoff_seconds <= 86400 and 1 <= policy.max_attempts <= 50):
        raise InvalidInput("retry: max_backoff_seconds backoff_seconds..86400, max_attempts 1..50")
    return policy.__dict__.copy()


# --- proposing and approving ------------------------------------------------------------------------
def _partner_ids(session: Session, keys: list[str]) -> dict[str, int]:
    found = dict(session.execute(select(Partner.key, Partner.id).where(Partner.key.in_(keys))).all()) if keys else {}
    unknown = sorted(set(keys) - set(found))
    if unknown:
        raise InvalidInput(f"unknown partner(s) {unknown}")
    return {k: int(v) for k, v in found.items()}


def parties(contract: EventContract) -> list[int]:
    ids = set(contract.consumer_partner_ids)
    if contract.producer_partner_id is not None:
        ids.add(contract.producer_partner_id)
    return sorted(ids)


def _side(principal: Principal) -> str:
    if principal.role == "steward":
        return "steward"
    if principal.role == "partner" and principal.partner_id is not None:
        return f"partner:{principal.partner_id}"
    raise Forbidden()


def latest_approved(session: Session, event_type: str, major: int | None = None) -> EventContract | None:
    stmt = select(EventContract).where(EventContract.event_type == event_type, EventContract.status == "approved")
    if major is not None:
        stmt = stmt.where(EventContract.major == major)
    return session.scalars(
        stmt.order_by(EventContract.major.desc(), EventContract.minor.desc(), EventContract.patch.desc()).limit(1)
    ).first()


def propose(session: Session, *, principal: Principal, proposal: Proposal) -> EventContract:
    side = _side(principal)
    if not TYPE_PATTERN.match(proposal.event_type) or len(proposal.event_type) > 64:
        raise InvalidInput("event_type: dotted lower-case words, e.g. customer.contract_signed")
    if any(t == proposal.event_type for t, _ in SERVER_EVENTS):
        raise InvalidInput(f"{proposal.event_type} is one of the server's own event types")
    m = VERSION_PATTERN.match(proposal.version)
    if m is None:
        raise InvalidInput("version: semantic version MAJOR.MINOR.PATCH, e.g. 1.0.0")
    major, minor, patch = map(int, m.groups())
    if not 1 <= proposal.latency_ms <= 86_400_000:
        raise InvalidInput("latency_ms: 1 .. 86400000")
    # The operator reads every stored event (``GET /v1/events``): naming it as a consumer is allowed, and
    # implied for a partner's events; partners consume through their webhooks.
    partner_consumers = [k for k in proposal.consumers if k != OPERATOR]
    if not partner_consumers and proposal.producer == OPERATOR:
        raise InvalidInput("name at least one consuming partner")
    ids = _partner_ids(
        session, sorted({*partner_consumers, *([proposal.producer] if proposal.producer != OPERATOR else [])})
    )
    producer_id = ids[proposal.producer] if proposal.producer != OPERATOR else None
    consumer_ids = sorted({ids[k] for k in partner_consumers})
    if producer_id is not None and producer_id in consumer_ids:
        raise InvalidInput("the producer cannot also be a consumer")
    if side != "steward" and principal.partner_id not in {producer_id, *consumer_ids}:
        raise Forbidden()  # a partner proposes only contracts it is a party to
    retry = _retry(proposal.retry)
    check_schema(session, proposal.schema, producer_is_partner=producer_id is not None)
    if catalog_fields(proposal.schema):
        if proposal.purpose is None or session.get(Purpose, proposal.purpose) is None:
            raise InvalidInput("a contract with customer-data fields names a known purpose")
    elif proposal.purpose is not None and session.get(Purpose, proposal.purpose) is None:
        raise InvalidInput(f"unknown purpose {proposal.purpose!r}")
    if session.scalar(
        select(EventContract.id).where(
            EventContract.event_type == proposal.event_type,
            EventContract.major == major,
            EventContract.minor == minor,
            EventContract.patch == patch,
        )
    ):
        raise Conflict(f"{proposal.event_type} {proposal.version} already exists")

    previous = latest_approved(session, proposal.event_type)
    changes: list[dict[str, str]] = []
    if previous is None:
        if (minor, patch) != (0, 0) or major < 1:
            raise InvalidInput("the first version of an event type is N.0.0 (N >= 1)")
        change = "initial"
    else:
        if side != "steward" and principal.partner_id not in parties(previous):
            raise Forbidden()
        changes = compare(previous, proposal, (producer_id, consumer_ids))
        change = required_change(changes)
        declared = (
            "major"
            if major > previous.major
            else "minor"
            if (major, minor) > (previous.major, previous.minor)
            else "patch"
            if (major, minor, patch) > (previous.major, previous.minor, previous.patch)
            else "none"
        )
        if declared == "none":
            raise Conflict(f"version {proposal.version} is not newer than the approved {previous.version}")
        if SEVERITY[declared] < SEVERITY[change]:
            raise InvalidInput(
                f"this change is {change}: version {proposal.version} does not say so",
                extra={
                    "errors": [c for c in changes if SEVERITY[c["severity"]] > SEVERITY[declared]],
                    "required": change,
                },
            )
        if (declared == "major" and (minor, patch) != (0, 0)) or major > previous.major + 1:
            raise InvalidInput(f"the next major version is {previous.major + 1}.0.0")
        change = declared  # a major version is re-approved even when the change itself was compatible
    now = utcnow()
    contract = EventContract(
        event_type=proposal.event_type,
        major=major,
        minor=minor,
        patch=patch,
        status="proposed",
        change=change,
        changes=changes,
        previous_id=previous.id if previous is not None else None,
        title=proposal.title,
        description=proposal.description,
        producer_partner_id=producer_id,
        consumer_partner_ids=consumer_ids,
        purpose_key=proposal.purpose,
        schema=proposal.schema,
        latency_ms=proposal.latency_ms,
        retry=retry,
        proposed_by=principal.actor,
        approvals={side: {"by": principal.actor, "at": now.isoformat()}},
        created_at=now,
    )
    if previous is not None and change in ("minor", "patch"):
        # Compatible evolution of an approved contract: both sides agreed to it when they approved.
        contract.status, contract.decided_at = "approved", now
    _settle(contract, now)
    session.add(contract)
    session.flush()
    _audit(session, principal, "event_contract.proposed", contract)
    return contract


def _audit(session: Session, principal: Principal, action: str, contract: EventContract) -> None:
    record_event(
        session,
        actor=principal,
        action=action,
        target=f"event_contract:{contract.id}",
        details={
            "type": contract.event_type,
            "version": contract.version,
            "status": contract.status,
            "change": contract.change,
        },
    )


def _pending_sides(contract: EventContract) -> list[str]:
    wanted = ["steward", *(f"partner:{p}" for p in parties(contract))]
    return [s for s in wanted if s not in contract.approvals]


def _settle(contract: EventContract, now: Any) -> None:
    if contract.status == "proposed" and not _pending_sides(contract):
        contract.status, contract.decided_at = "approved", now


def get(session: Session, contract_id: int, *, principal: Principal) -> EventContract:
    contract = session.get(EventContract, contract_id)
    if contract is None or (principal.role == "partner" and principal.partner_id not in parties(contract)):
        raise NotFound("no such event contract")
    if principal.role not in ("steward", "partner", "compliance"):
        raise NotFound("no such event contract")
    return contract


def list_contracts(session: Session, *, principal: Principal) -> list[EventContract]:
    rows = session.scalars(select(EventContract).order_by(EventContract.event_type, EventContract.id))
    return [c for c in rows if principal.role != "partner" or principal.partner_id in parties(c)]


def approve(session: Session, *, principal: Principal, contract_id: int) -> EventContract:
    side = _side(principal)
    contract = session.get(EventContract, contract_id, with_for_update=True)
    if contract is None or (side != "steward" and principal.partner_id not in parties(contract)):
        raise NotFound("no such event contract")
    if contract.status != "proposed":
        raise Conflict(f"the contract is {contract.status}")
    if side in contract.approvals:
        raise Conflict("your side has already approved this version")
    contract.approvals = {**contract.approvals, side: {"by": principal.actor, "at": utcnow().isoformat()}}
    _settle(contract, utcnow())
    _audit(session, principal, "event_contract.approved", contract)
    return contract


def reject(session: Session, *, principal: Principal, contract_id: int) -> EventContract:
    side = _side(principal)
    contract = session.get(EventContract, contract_id, with_for_update=True)
    if contract is None or (side != "steward" and principal.partner_id not in parties(contract)):
        raise NotFound("no such event contract")
    if contract.status != "proposed":
        raise Conflict(f"the contract is {contract.status}")
    contract.status, contract.decided_at = "rejected", utcnow()
    _audit(session, principal, "event_contract.rejected", contract)
    return contract


def pending_sides(contract: EventContract) -> list[str]:
    return _pending_sides(contract) if contract.status == "proposed" else []
