"""Real-time decisions: one customer's decision from a partner's model, at the moment of a business event.

What the customer and the operator are promised:

- Consent is evaluated at the request, for every field of the contract, for that partner and purpose, at the
  granularity each transform needs (the evaluator batch jobs use). Without it the answer is ``not_permitted``:
  nothing of the customer is decrypted and the model does not run.
- The model sees only the contract's transforms of that customer's profile (the emission code, for one
  subject) under the partner's pseudonym, in a warm sandbox of that partner's approved ONNX model
  (`sandbox.WarmPool`: the batch jobs' isolation). A pool serves one contract's one model, never another
  partner's or model's requests, and is discarded when the contract, its model or a catalog field it reads
  changes (checked on every request, so every server process notices), or by `invalidate`.
- The decision goes to the caller (the operator's system) only; no partner route reads it. It is stored with
  one usage-ledger entry naming every field read, in one transaction, after consent is checked again: a
  customer who withdrew while the model ran gets ``not_permitted`` and nothing but the refusal is stored.
- A request names its triggering event; the same (contract, event id) answers the stored decision again,
  without running the model twice.
"""

from __future__ import annotations

import functools
import logging
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, Select, String, Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import consent
from consent import Granularity
from dataspace.agreements import contracts
from dataspace.agreements.models import Contract, PartnerModel
from dataspace.catalog.models import Field
from dataspace.db import Database, held_back, insert_rows, utcnow
from dataspace.emission import Identity, Quantile, emit_one, parse_features
from dataspace.emission.service import catalog_fields, quantile_cut_points
from dataspace.emission.specs import CatalogField, FeatureSpec, column_name, feature_fields
from dataspace.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from dataspace.grants.convert import field_ref, partner_ref, to_domain
from dataspace.grants.eligibility import eligible_subjects
from dataspace.grants.models import ConsentGrant
from dataspace.groupcommit import GroupCommit
from dataspace.keys import KeyRing
from dataspace.linkage import join as linkage_join
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from dataspace.realtime.models import RealtimeDecision
from dataspace.settings import Settings
from dataspace.subjects.models import Subject
from dataspace.tlog.log import NewEntry, append
from dataspace.usage import USAGE_LOG
from dataspace.usage.service import entry_time
from dataspace.vault import Vault
from sandbox import DecisionSchema, JobFailed, Limits, ModelRejected, OnnxModel, SandboxUnavailable, WarmPool
from transparency.canonical import canonical_json

__all__ = ["DecisionOutcome", "DecisionService", "decide"]

log = logging.getLogger("dataspace.realtime")

DECIDED = "decided"
NOT_PERMITTED = "not_permitted"


@dataclass(frozen=True)
class DecisionOutcome:
    """The answer to the operator: the decision, or ``not_permitted`` (no decision, the model did not run)."""

    id: int
    contract_id: int
    subject_id: int
    event_id: str
    event_type: str
    outcome: str
    decision: str | float | None
    created_at: datetime
    replayed: bool = False  # an earlier answer to the same event, returned again

    @classmethod
    def of(cls, row: RealtimeDecision, *, replayed: bool = False) -> DecisionOutcome:
        return cls(
            id=row.id,
            contract_id=row.contract_id,
            subject_id=row.subject_id,
            event_id=row.event_id,
            event_type=row.event_type,
            outcome=row.outcome,
            decision=row.label if row.label is not None else row.value,
            created_at=row.created_at,
            replayed=replayed,
        )


@dataclass
class _Served:
    """A contract's model kept warm, with what every request under it needs (fixed for the pool's life)."""

    state: tuple[Any, ...]  # what the pool depends on (`_lookup`): any change discards the pool
    pool: WarmPool
    model_id: int
    partner_id: int
    partner_key: str
    partner: consent.PartnerRef
    purpose_key: str
    events: frozenset[str]
    specs: list[FeatureSpec]
    # (catalog field, the granularity its transform needs): consent is evaluated for each
    needs: list[tuple[consent.FieldRef, Granularity]]
    schema: DecisionSchema
    quantile_cuts: dict[str, list[float]]
    catalog: dict[str, CatalogField]  # the features' catalog fields, at the versions in `state`


class DecisionService:
    """The warm pools of one server process, keyed by contract (each pool holds one model of one partner)."""

    def __init__(self, settings: Settings, *, limits: Limits | None = None) -> None:
        self.settings = settings
        self.limits = limits or Limits(cpu_seconds=600, wall_seconds=3600.0)
        self._lock = threading.Lock()
        self._served: dict[int, _Served] = {}
        self._building: dict[int, threading.Lock] = {}
        self._keys: dict[int, list[str]] = {}  # contract -> the catalog fields it reads (never changes)

    def pool(self, contract_id: int) -> WarmPool | None:
        """The live pool of a contract, if any (tests and the bench look at its runners)."""
        with self._lock:
            served = self._served.get(contract_id)
        return served.pool if served is not None else None

    def invalidate(self, contract_id: int | None = None) -> None:
        """Discard the warm sandboxes of one contract (None: all); the next request starts fresh ones."""
        with self._lock:
            if contract_id is None:
                gone = list(self._served.values())
                self._served.clear()
            else:
                one = self._served.pop(contract_id, None)
                gone = [one] if one is not None else []
        for served in gone:
            served.pool.close()

    close = invalidate

    def _serve(
        self, session: Session, keys: KeyRing, vault: Vault, contract_id: int, state: tuple[Any, ...]
    ) -> _Served:
        with self._lock:
            served = self._served.get(contract_id)
            if served is not None and served.state == state:
                return served
            building = self._building.setdefault(contract_id, threading.Lock())
        with building:  # one request builds a contract's pool; the others wait for it
            with self._lock:
                served = self._served.get(contract_id)
                if served is not None and served.state == state:
                    return served
            if served is not None:
                log.info(
                    "contract, model or catalog changed: warm sandboxes discarded", extra={"contract_id": contract_id}
                )
                self.invalidate(contract_id)
            served = self._build(session, keys, vault, contract_id, state)
            with self._lock:
                self._served[contract_id] = served
            return served

    def _build(
        self, session: Session, keys: KeyRing, vault: Vault, contract_id: int, state: tuple[Any, ...]
    ) -> _Served:
        contract = session.get(Contract, contract_id)
        assert contract is not None
        partner = session.get(Partner, contract.partner_id)
        assert partner is not None
        model = session.get(PartnerModel, state[_MODEL])
        assert model is not None
        specs = parse_features(contract.features)
        fields = {f.key: f for f in session.scalars(select(Field).where(Field.key.in_([s.field for s in specs])))}
        if len(fields) != len({s.field for s in specs}):
            raise Conflict(f"contract {contract.id} reads a field the catalog no longer has")
        needs: list[tuple[consent.FieldRef, Granularity]] = []
        for spec in specs:
            level = Granularity.PSEUDONYMIZED_RAW if isinstance(spec, Identity) else Granularity.GENERALIZED
            needs.append((field_ref(fields[spec.field]), level))
        schema = contracts.decision_schema_of(contract.decision_schema)
        cuts: dict[str, list[float]] = {}
        if any(isinstance(s, Quantile) for s in specs):
            # Quantile bins need the population's cut points: those of the customers consenting now, fixed for
            # the life of this pool (a batch job computes them the same way, over its eligible subjects).
            population = eligible_subjects(
                session, partner_key=partner.key, purpose_key=contract.purpose_key, specs=specs, at=utcnow()
            )
            cuts = quantile_cut_points(
                session,
                vault,
                keys,
                partner_key=partner.key,
                features=specs,
                subject_ids=population,
                workers=1,
            )
        settings = self.settings
        pool = WarmPool(
            OnnxModel(bytes(model.data)),
            schema,
            [column_name(s) for s in specs] + linkage_join.feature_names(session, contract_id=contract.id),
            limits=self.limits,
            size=settings.realtime_pool_size,
            max_decisions=settings.realtime_max_decisions,
            request_seconds=settings.realtime_request_seconds,
        )
        pool.warm()
        return _Served(
            state=state,
            pool=pool,
            model_id=model.id,
            partner_id=partner.id,
            partner_key=partner.key,
            partner=partner_ref(partner),
            purpose_key=contract.purpose_key,
            events=frozenset((contract.decision_service or {}).get("events", [])),
            specs=specs,
            needs=needs,
            schema=schema,
            quantile_cuts=cuts,
            catalog=catalog_fields(session, [s.field for s in specs]),
        )


_MODEL = 5  # index of the served model's id in a `_Lookup` state


@dataclass(frozen=True)
class _Lookup:
    state: tuple[Any, ...]  # what a warm pool depends on (see `_lookup`)
    declared: bool  # the contract declares a decision service
    replay: int | None  # the decision already stored for this event
    subject_id: int | None  # the customer named, if they exist


@functools.lru_cache(maxsize=64)
def _lookup_statement(by_ref: bool, n_keys: int) -> Select[Any]:
    """`_lookup`'s query, built once per way of naming the customer and number of field keys (bound parameters:
    contract_id, key0..key{n_keys - 1}, event_id, subject). One placeholder per key rather than an expanding
    IN: the SQL is not rendered again on every execution."""
    newest = (
        select(func.max(PartnerModel.id))
        .where(PartnerModel.contract_id == Contract.id, PartnerModel.kind == "onnx", PartnerModel.status == "ready")
        .scalar_subquery()
    )
    keys = [bindparam(f"key{i}", type_=String) for i in range(n_keys)]
    versions = select(func.sum(Field.version)).where(Field.key.in_(keys)).scalar_subquery()
    active = select(func.count()).select_from(Field).where(Field.key.in_(keys), Field.status == "active")
    replay = select(RealtimeDecision.id).where(
        RealtimeDecision.contract_id == Contract.id, RealtimeDecision.event_id == bindparam("event_id", type_=String)
    )
    subject = (
        Subject.blind_ref == bindparam("subject", type_=String)
        if by_ref
        else Subject.id == bindparam("subject", type_=Integer)
    )
    return (
        select(
            Contract.status,
            Contract.decided_at,
            Contract.valid_from,
            Contract.valid_until,
            Partner.status,
            newest,
            versions,  # field versions only grow: their sum changes whenever one field changes
            active.scalar_subquery(),
            Contract.decision_service,
            replay.scalar_subquery(),
            select(Subject.id).where(subject).scalar_subquery(),
            # the partner's own linked columns (dataspace.linkage.join): a new or shredded run changes the pool
            linkage_join.linked_run_query(Contract.id).scalar_subquery(),
        )
        .join(Partner, Partner.id == Contract.partner_id)
        .where(Contract.id == bindparam("contract_id", type_=Integer))
    )


def _lookup(
    session: Session, service: DecisionService, contract_id: int, event_id: str, subject: tuple[bool, Any]
) -> _Lookup | None:
    """Everything a request checks before any customer data is read, in one query: the contract's status and
    decision (a revocation, an expiry), its partner's status, the newest ready ONNX model, the versions and
    statuses of the catalog fields it reads (a tightened or retired field), an earlier answer to the same
    event, the customer, and the partner's linked run. A contract's features, schema and decision service
    never change after its proposal, so its field keys are looked up once."""
    keys = service._keys.get(contract_id)
    if keys is None:
        features = session.scalar(select(Contract.features).where(Contract.id == contract_id))
        if features is None:
            return None
        keys = service._keys[contract_id] = sorted({str(f.get("field")) for f in features})
    by_ref, value = subject
    row = (
        session.connection()
        .execute(
            _lookup_statement(by_ref, len(keys)),
            {
                "contract_id": contract_id,
                "event_id": event_id,
                "subject": value,
                **{f"key{i}": key for i, key in enumerate(keys)},
            },
        )
        .first()
    )
    if row is None:
        return None
    return _Lookup(state=(*row[:8], row[11]), declared=row[8] is not None, replay=row[9], subject_id=row[10])


# Built once: they run on every decision, read (one customer, one purpose: plain equalities, so the SQL is not
# rendered again per execution as an expanding IN is) and write (a batch). The columns `to_domain` reads, as
# rows, not entities: the session still flushes first (a withdrawal earlier in the same group-commit batch is
# seen), without the identity map's bookkeeping per grant.
_GRANT_COLUMNS = select(
    *(
        getattr(ConsentGrant, name)
        for name in (
            "id",
            "subject_id",
            "purpose_key",
            "field_key",
            "dimension_key",
            "partner_key",
            "partner_category",
            "granularity",
            "valid_from",
            "valid_until",
            "state",
            "withdrawn_at",
        )
    )
)
_GRANTS_OF_ONE = _GRANT_COLUMNS.where(
    ConsentGrant.subject_id == bindparam("subject", type_=Integer),
    ConsentGrant.purpose_key == bindparam("purpose", type_=String),
)
_GRANTS = _GRANT_COLUMNS.where(
    ConsentGrant.subject_id.in_(bindparam("subjects", expanding=True)),
    ConsentGrant.purpose_key.in_(bindparam("purposes", expanding=True)),
)


def _grants(session: Session, subject_ids: set[int], purposes: set[str]) -> dict[tuple[int, str], list[consent.Grant]]:
    """The grants of these subjects for these purposes, by (subject, purpose), in one query."""
    if len(subject_ids) == 1 and len(purposes) == 1:
        [subject], [purpose] = subject_ids, purposes
        rows = session.execute(_GRANTS_OF_ONE, {"subject": subject, "purpose": purpose})
    else:
        rows = session.execute(_GRANTS, {"subjects": sorted(subject_ids), "purposes": sorted(purposes)})
    out: dict[tuple[int, str], list[consent.Grant]] = {}
    for row in rows:
        out.setdefault((row.subject_id, row.purpose_key), []).append(to_domain(cast(ConsentGrant, row)))
    return out


def _permitted(grants: list[consent.Grant], served: _Served, subject_id: int, at: datetime) -> bool:
    """Consent at ``at`` for every field of the contract, for this partner and purpose, at the granularity
    each transform needs (the consent domain's single-subject evaluator; default deny), given the subject's
    grants for the contract's purpose."""
    return bool(grants) and all(
        consent.is_permitted(
            grants,
            subject_id=subject_id,
            field=field,
            partner=served.partner,
            purpose=served.purpose_key,
            at=at,
            granularity=level,
        )
        for field, level in served.needs
    )


def _subject_condition(keys: KeyRing, *, subject_id: int | None, customer_ref: str | None) -> tuple[bool, Any]:
    """How the request names the customer: (by the operator's reference, its blind index) or (by id, the id)."""
    if (subject_id is None) == (customer_ref is None):
        raise InvalidInput("name the customer by exactly one of subject_id or customer_ref")
    if customer_ref is not None:
        return True, keys.blind_index(customer_ref)
    return False, subject_id


def _replay(session: Session, contract_id: int, event_id: str) -> RealtimeDecision | None:
    return session.scalar(
        select(RealtimeDecision).where(
            RealtimeDecision.contract_id == contract_id, RealtimeDecision.event_id == event_id
        )
    )


def decide(
    service: DecisionService,
    db: Database,
    keys: KeyRing,
    vault: Vault,
    writes: GroupCommit,
    *,
    principal: Principal,
    contract_id: int,
    event_id: str,
    event_type: str,
    subject_id: int | None = None,
    customer_ref: str | None = None,
) -> DecisionOutcome:
    """The decision of the contract's partner model for one customer, triggered by one event (module
    docstring). Only the operator's side (a steward principal: a person or the operator's system) may ask."""
    if principal.role != "steward":
        raise Forbidden()
    if not event_id or len(event_id) > 128:
        raise InvalidInput("event_id must be 1 to 128 characters")
    subject = _subject_condition(keys, subject_id=subject_id, customer_ref=customer_ref)
    now = utcnow()
    # Statement by statement (no snapshot across them, as under PostgreSQL's READ COMMITTED): whatever changes
    # meanwhile, consent is checked again when the answer is stored.
    with db.statement_reads() as session:
        found = _lookup(session, service, contract_id, event_id, subject)
        if found is None:
            raise NotFound("no such contract")
        if found.replay is not None:
            earlier = session.get(RealtimeDecision, found.replay)
            assert earlier is not None
            return DecisionOutcome.of(earlier, replayed=True)
        status, _decided_at, valid_from, valid_until, partner_status, model_id = found.state[:6]
        if not found.declared:
            raise Conflict(f"contract {contract_id} declares no decision service")
        usable = status == "approved" and valid_from <= now < valid_until and partner_status == "active"
        if not usable or model_id is None:
            service.invalidate(contract_id)  # revoked, expired, suspended or no model: its sandboxes go at once
            if model_id is None and usable:
                raise Conflict(f"contract {contract_id} has no approved ONNX model to serve decisions")
            raise Conflict(
                f"contract {contract_id} is not usable now (not approved, outside its window, or partner inactive)"
            )
        served = service._serve(session, keys, vault, contract_id, found.state)
        if event_type not in served.events:
            raise InvalidInput(f"event type {event_type!r} does not trigger decisions under this contract")
        if found.subject_id is None:
            raise NotFound("no such customer")
        sid = int(found.subject_id)
        features: tuple[str, list[Any]] | None = None
        grants = _grants(session, {sid}, {served.purpose_key}).get((sid, served.purpose_key), [])
        if _permitted(grants, served, sid, now):
            features = emit_one(
                session,
                vault,
                keys,
                partner_key=served.partner_key,
                features=served.specs,
                subject_id=sid,
                pseudonym_scope=f"realtime:{contract_id}",
                quantile_cuts=served.quantile_cuts,
                catalog=served.catalog,
            )
            if features is not None and served.pool.feature_names[len(served.specs) :]:
                extra = linkage_join.values_for(db, vault, contract_id=contract_id, subject_id=sid)
                features = (features[0], features[1] + extra)
    decision: str | float | None = None
    if features is not None:
        pseudonym, values = features
        if any(isinstance(v, str) for v in values):
            raise Conflict("ONNX models take numeric features only; this contract emits a category")
        try:
            decision = served.pool.decide(pseudonym, values)
        except (JobFailed, ModelRejected) as exc:
            log.warning(
                "real-time decision failed in the sandbox",
                extra={"contract_id": contract_id, "reason": exc.reason, "detail": exc.detail},
            )
            raise Unavailable(f"the partner's model failed: {exc.reason}") from None
        except SandboxUnavailable as exc:
            raise Unavailable(exc.reason) from None

    answer = _Answer(
        served=served,
        contract_id=contract_id,
        subject_id=sid,
        event_id=event_id,
        event_type=event_type,
        decision=decision,
        requested_by=principal.actor,
    )
    try:
        stored = writes.call(functools.partial(_store, answer=answer))
    except IntegrityError:  # the same event stored by a concurrent request: answer what it stored
        with db.session() as session:
            earlier = _replay(session, contract_id, event_id)
            if earlier is None:
                raise
            return DecisionOutcome.of(earlier, replayed=True)
    assert stored.outcome is not None
    return stored.outcome


# --- storing: a group-commit batch's decisions in a few statements, whatever its size ---------------------
@dataclass
class _Answer:
    """A decision on its way to the database; ``outcome`` is set once it is written."""

    served: _Served
    contract_id: int
    subject_id: int
    event_id: str
    event_type: str
    decision: str | float | None  # None: consent was missing when the request read
    requested_by: str
    outcome: DecisionOutcome | None = None


_HELD = "realtime_decisions"
_DECISIONS: Table = RealtimeDecision.__table__  # type: ignore[assignment]
_KEYS = ("id", "contract_id", "event_id")


def decisions_batched(session: Session) -> AbstractContextManager[None]:
    """Hold back the decisions stored in this block and write them together when it ends (in the caller's
    transaction): one consent query, one INSERT (returning the ids) and one ledger append for the whole batch,
    instead of three round trips each. The group committer wraps every batch in it."""
    return held_back(session, _HELD, [], lambda pending: _write(session, pending))


def _store(session: Session, *, answer: _Answer) -> _Answer:
    pending: list[_Answer] | None = session.info.get(_HELD)
    if pending is None:
        _write(session, [answer])
    else:
        pending.append(answer)
    return answer


def _write(session: Session, answers: list[_Answer]) -> None:
    """Store decisions with their ledger entries. Consent is checked again at this moment: a withdrawal while
    the model ran wins (the answer becomes ``not_permitted``, nothing was used). A second request for the same
    event fails the unique (contract, event) constraint, and the batch runs again one request at a time."""
    if not answers:
        return
    at = utcnow()
    ran = [a for a in answers if a.decision is not None]
    grants = _grants(session, {a.subject_id for a in ran}, {a.served.purpose_key for a in ran}) if ran else {}
    records: list[dict[str, Any]] = []
    for answer in answers:
        served = answer.served
        decided = answer.decision is not None and _permitted(
            grants.get((answer.subject_id, served.purpose_key), []), served, answer.subject_id, at
        )
        records.append(
            {
                "contract_id": answer.contract_id,
                "partner_id": served.partner_id,
                "model_id": served.model_id,
                "subject_id": answer.subject_id,
                "event_id": answer.event_id,
                "event_type": answer.event_type,
                "outcome": DECIDED if decided else NOT_PERMITTED,
                "label": answer.decision if decided and isinstance(answer.decision, str) else None,
                "value": answer.decision if decided and isinstance(answer.decision, float) else None,
                "requested_by": answer.requested_by,
                "created_at": at,
            }
        )
    # The ids come back with the INSERT, matched by the unique (contract, event).
    ids = {(c, e): i for i, c, e in insert_rows(session, _DECISIONS, records, returning=_KEYS)}
    used: list[NewEntry] = []
    for answer, record in zip(answers, records, strict=True):
        row = RealtimeDecision(id=ids[(answer.contract_id, answer.event_id)], **record)  # as stored, not added
        if row.outcome == DECIDED:
            used.append(_ledger_entry(answer.served, row.id, row.subject_id, row.label, at))
        answer.outcome = DecisionOutcome.of(row)
    if used:
        append(session, log=USAGE_LOG, entries=used)


def _ledger_entry(served: _Served, decision_id: int, subject_id: int, label: str | None, at: datetime) -> NewEntry:
    """One usage-ledger entry: the fields read, the partner and purpose, the decision (a label; a number is
    a data-derived value the ledger does not name) and the real-time decision's id."""
    entry = {
        "decision": label,
        "decision_id": decision_id,
        "fields": sorted(set(feature_fields(served.specs))),
        "job_id": None,
        "partner": served.partner_key,
        "purpose": served.purpose_key,
        "subject_id": subject_id,
        "time": entry_time(at),
    }
    partner = served.partner_key
    return NewEntry(canonical_json(entry), created_at=at, action="data.used", subject_id=subject_id, partner=partner)


def list_decisions(session: Session, *, contract_id: int | None = None, limit: int = 100) -> list[RealtimeDecision]:
    stmt = select(RealtimeDecision).order_by(RealtimeDecision.id.desc()).limit(limit)
    if contract_id is not None:
        stmt = stmt.where(RealtimeDecision.contract_id == contract_id)
    return list(session.scalars(stmt))
