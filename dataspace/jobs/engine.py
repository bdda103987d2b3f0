"""The job engine: plan a job once, run its shards on any worker, store each shard exactly once, finish the
job once. One state machine, driven by a broker or by this process.

``plan_job``: claim the job (queued -> running), evaluate consent once (the plan's ``evaluated_at``), split
the eligible ids into shards of about ``shard_subjects``, compute the quantile cut points every shard must
share when there is more than one (over a uniform sample sized for the bins' precision above that size,
``shards.cut_sample_size``: the cut points are population parameters; a single shard bins its own
population, which is the whole one) and write shards + plan in one transaction.

``run_shard``: claim the shard (queued, or running with a stale heartbeat: its worker died), emit its
subjects' features with the plan's cut points, run the sandbox, validate, then ONE storing transaction
(consent re-check since the plan, decisions, usage ledger, shard ``succeeded``). That transaction stores
only for the attempt holding the claim and only if the shard has not succeeded: a redelivered or
duplicated message stores nothing again. The same worker then credits the usage points of the shard's
decided subjects (``credit_shard``: bounded by the shard, idempotent), and ``finish_job``, under a lock on
the job row, turns the job ``succeeded`` once every shard has (audit, events), whichever shard's worker
gets there first. A shard's subjects earn their points when the shard stores (that use happened), even if
another shard of the job later fails for good.

Who drives it: with a broker, ``dataspace.jobs.queue`` (API replicas send "plan" messages from
``dispatch_pending``, workers plan and run shards); without one, the in-process queue here (``run_job``:
plan, then the shards one after the other; ``run_queued``: every queued job and every shard recovery
re-queued). Claims, heartbeats and takeovers are ``dataspace.jobs.lease``; ``recover`` is the one recovery
for both (a job whose planner died, a shard whose worker died), with every time from the settings.

k-anonymity is applied per shard: every feature combination a sandbox run sees is shared by at least k
rows of that run's input, hence of the job; on small shards this suppresses a little more than a single
pass over the whole population would (shards are ~250k subjects in production, where it is negligible).

Lock order, everywhere: the job row, then shard rows (the storing transaction takes the job row FOR
SHARE so shards of one job store concurrently, while cancel / finish / recovery take it FOR UPDATE).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from dataspace.agreements import contracts
from dataspace.agreements.models import Contract, PartnerModel
from dataspace.audit import record_event
from dataspace.db import Database, utcnow
from dataspace.emission import DecryptPool, Quantile, emit, parse_features, quantile_cut_points
from dataspace.emission.specs import feature_fields
from dataspace.errors import Conflict, DataspaceError, NotFound
from dataspace.grants.eligibility import eligible_subjects
from dataspace.jobs import steps, uploads
from dataspace.jobs.lease import Abandoned, Heartbeat, LeaseTimes, ShardBusy, claim_job, given_up, take, verdict
from dataspace.jobs.models import Decision, Job, JobShard
from dataspace.jobs.outcomes import ReleaseSchedule, job_completed, mark_failed, reason_of_sandbox
from dataspace.jobs.shards import pack_subjects, sample_for_cuts, split_subjects, unpack_subjects
from dataspace.keys import KeyRing
from dataspace.linkage import join as linkage_join
from dataspace.observability import metrics
from dataspace.partners.models import Partner
from dataspace.points.earning import usage_points
from dataspace.settings import Settings
from dataspace.vault import Vault
from sandbox import DecisionSchema, JobFailed, Limits, ModelRejected, ModelSpec, SandboxUnavailable

log = logging.getLogger("dataspace.jobs")

REDISPATCH_AFTER = timedelta(minutes=15)  # a message the broker confirmed but nobody ran: send again
SEND_GRACE = timedelta(seconds=10)  # the planner sends its shards itself; the sweep waits this long first

BeforeStore = Callable[[int, int], None]  # (job id, shard index): after the sandbox, before the storing transaction
SendPlan = Callable[[int], None]
SendShard = Callable[[int, int], None]

_SUMMED = (
    "loaded",
    "unreadable",
    "emitted",
    "suppressed_rows",
    "suppressed_cells",
    "decisions",
    "dropped_withdrawn",
    "ledger_entries",
)


class ShardOptions(TypedDict, total=False):
    """How ``run_job`` runs each shard (see ``run_shard``)."""

    before_store: BeforeStore | None
    limits: Limits | None
    heartbeat_seconds: float | None
    credit_inline: bool


@dataclass
class RunResult:
    """A job run to its end in this process (``JobEngine.run_job``)."""

    job_id: int
    status: str
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class PlanResult:
    job_id: int
    status: str
    shards: int = 0
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ShardResult:
    job_id: int
    index: int
    status: str  # the shard's status after this call, or "abandoned"
    job_status: str = "running"
    stats: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Terms:
    """What a job runs under: its contract's terms, its partner, its model."""

    contract_id: int
    partner_key: str
    purpose_key: str
    features: list[dict[str, Any]]
    schema: DecisionSchema
    k: int
    model: ModelSpec

    @classmethod
    def load(cls, session: Session, job: Job) -> tuple[_Terms, Contract, PartnerModel, Partner]:
        contract = session.get(Contract, job.contract_id)
        model = session.get(PartnerModel, job.model_id)
        partner = session.get(Partner, job.partner_id)
        assert contract is not None
        assert model is not None
        assert partner is not None
        terms = cls(
            contract_id=contract.id,
            partner_key=partner.key,
            purpose_key=contract.purpose_key,
            features=list(contract.features),
            schema=contracts.decision_schema_of(contract.decision_schema),
            k=contract.k_min,
            model=steps.model_spec(model),
        )
        return terms, contract, model, partner


@dataclass(frozen=True)
class _Claim:
    """A lease held on a job (planning) or, with its ``index``, one of its shards."""

    job_id: int
    attempt: int
    terms: _Terms


@dataclass(frozen=True)
class _ShardClaim(_Claim):
    index: int
    subjects: npt.NDArray[np.int64]
    evaluated_at: datetime
    cuts: dict[str, list[float]]


def _failure(exc: Exception) -> tuple[str, str] | None:
    """The partner's reason code and the steward's detail of an error that ends the job; None for one that
    does not (a database or network error: the broker retries, recovery takes over)."""
    if isinstance(exc, JobFailed | ModelRejected):
        return reason_of_sandbox(exc.reason), f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
    if isinstance(exc, SandboxUnavailable):
        return "sandbox_unavailable", exc.reason
    if isinstance(exc, DataspaceError):
        return "not_runnable", exc.detail
    return None


def _internal(exc: Exception) -> tuple[str, str]:
    return "internal", f"internal error while running the job: {type(exc).__name__}"


def _lock_shard(session: Session, job_id: int, index: int, *, job_lock: str) -> tuple[Job, JobShard]:
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update(read=job_lock == "share"))
    if job is None:
        raise NotFound("no such job")
    shard = session.scalar(select(JobShard).where(JobShard.job_id == job_id, JobShard.index == index).with_for_update())
    if shard is None:
        raise NotFound("no such shard")
    return job, shard


def _add(timings: dict[str, float], more: dict[str, float]) -> None:
    for phase, seconds in more.items():
        timings[phase] = timings.get(phase, 0.0) + seconds


@dataclass
class JobEngine:
    """The job state machine over exactly what it uses: the database, the key ring (pseudonym keys), the
    vault (profiles) and the settings (shard size, lease times, the release schedule). Cheap to build:
    build one per pass where the key ring may have been reloaded."""

    db: Database
    keys: KeyRing
    vault: Vault
    settings: Settings

    def _times(self, *, heartbeat_seconds: float | None = None, stale_after: timedelta | None = None) -> LeaseTimes:
        return LeaseTimes.of(self.settings, heartbeat_seconds=heartbeat_seconds, stale_after=stale_after)

    @property
    def _schedule(self) -> ReleaseSchedule:
        return ReleaseSchedule.of(self.settings)

    # --- the in-process queue ----------------------------------------------------------------------------
    def run_job(self, job_id: int, *, shard_subjects: int | None = None, **options: Unpack[ShardOptions]) -> RunResult:
        """Run a queued job to its end state in this process: plan it, then run its shards one after the
        other (the steps the broker's workers take; ``options`` as for ``run_shard``). An unexpected error
        fails the job (nobody would retry it here). Raises ``Conflict`` if the job is not queued."""
        with DecryptPool() as pool:  # one set of decrypt workers for the plan and every shard
            plan = self.plan_job(
                job_id, shard_subjects=shard_subjects, heartbeat_seconds=options.get("heartbeat_seconds"), pool=pool
            )
            timings = dict(plan.timings)
            for index in range(plan.shards):
                try:
                    shard = self.run_shard(job_id, index, fail_unexpected=True, pool=pool, **options)
                except ShardBusy:
                    continue  # another process runs it (and finishes the job if it is the last)
                _add(timings, shard.timings)
                if shard.job_status != "running":
                    break
        with self.db.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            result = RunResult(job_id, job.status, job.error, dict(job.stats), timings)
        if result.status == "succeeded":
            metrics.observe_job_phases(timings)
        return result

    def run_queued(self) -> int:
        """Run queued work in this process until none is left: each queued job (``run_job``), and each shard
        recovery re-queued after its process died. Returns how many it ran. Several workers (threads,
        processes, machines) may call this at once: claims are atomic, the loser moves on."""
        ran = 0
        while (work := self._next_queued()) is not None:
            job_id, index = work
            try:
                if index is None:
                    self.run_job(job_id)
                else:
                    self.run_shard(job_id, index, fail_unexpected=True)
            except (Conflict, ShardBusy):
                continue  # another worker claimed it first
            ran += 1
        return ran

    def _next_queued(self) -> tuple[int, int | None] | None:
        with self.db.session() as session:
            job_id = session.scalar(
                select(Job.id).where(Job.status == "queued").order_by(Job.created_at, Job.id).limit(1)
            )
            if job_id is not None:
                return job_id, None
            shard = session.execute(
                select(JobShard.job_id, JobShard.index)
                .where(
                    JobShard.status == "queued",
                    JobShard.job_id.in_(select(Job.id).where(Job.status == "running")),
                )
                .order_by(JobShard.job_id, JobShard.index)
                .limit(1)
            ).first()
        return None if shard is None else (shard[0], shard[1])

    # --- plan ----------------------------------------------------------------------------------------------
    def plan_job(
        self,
        job_id: int,
        *,
        shard_subjects: int | None = None,
        heartbeat_seconds: float | None = None,
        pool: DecryptPool | None = None,
    ) -> PlanResult:
        """Claim a queued job and split it into queued shards. Raises ``Conflict`` if the job is not queued
        (a duplicate message, or another planner won), ``NotFound`` if there is no such job. ``pool``:
        decrypt workers to share (``run_job`` keeps one for the job)."""
        claim = self._claim_job(job_id)
        if isinstance(claim, PlanResult):
            return claim
        size = shard_subjects or self.settings.job_shard_subjects
        terms = claim.terms
        every = self._times(heartbeat_seconds=heartbeat_seconds).heartbeat_seconds
        timings: dict[str, float] = {}
        try:
            with Heartbeat(self.db, job_id, claim.attempt, every):
                specs = parse_features(terms.features)
                t0 = time.perf_counter()
                evaluated_at = utcnow()
                with self.db.session() as session:
                    eligible = eligible_subjects(
                        session,
                        partner_key=terms.partner_key,
                        purpose_key=terms.purpose_key,
                        specs=specs,
                        at=evaluated_at,
                    )
                    timings["eligibility"] = time.perf_counter() - t0
                    parts = split_subjects(eligible, size)
                    bins = max((s.q for s in specs if isinstance(s, Quantile)), default=0)
                    sample = sample_for_cuts(eligible, job_id, bins) if len(parts) > 1 and bins else eligible[:0]
                    t0 = time.perf_counter()
                    cuts = (
                        quantile_cut_points(
                            session,
                            self.vault,
                            self.keys,
                            partner_key=terms.partner_key,
                            features=specs,
                            subject_ids=sample,
                            pool=pool,
                        )
                        if sample.size
                        else {}
                    )
                    timings["quantiles"] = time.perf_counter() - t0
            with self.db.transaction() as session:
                job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
                assert job is not None
                if job.status != "running" or job.attempt != claim.attempt:
                    return PlanResult(job_id, job.status, 0, job.error, timings)  # cancelled, or recovered meanwhile
                session.add_all(
                    JobShard(
                        job_id=job_id, index=i, status="queued", attempt=0, size=int(p.size), subjects=pack_subjects(p)
                    )
                    for i, p in enumerate(parts)
                )
                job.shard_count = len(parts)
                job.heartbeat_at = utcnow()  # from here on shards carry the heartbeats; this dates the plan
                job.plan = {
                    "evaluated_at": evaluated_at.isoformat(),
                    "eligible": int(eligible.size),
                    "sampled": int(sample.size),
                    "quantile_cuts": cuts,
                }
                session.flush()
                record_event(
                    session, actor=None, action="job.planned", target=f"job:{job_id}", details={"shards": len(parts)}
                )
            return PlanResult(job_id, "running", len(parts), timings=timings)
        except Exception as exc:
            failure = _failure(exc)
            if failure is None:
                log.exception("job planning failed", extra={"job_id": job_id})
                failure = _internal(exc)
            return self._fail_job(claim, *failure, timings)

    def _claim_job(self, job_id: int) -> _Claim | PlanResult:
        now = utcnow()
        with self.db.transaction() as session:
            job = claim_job(session, job_id, now)
            try:
                terms, contract, model, partner = _Terms.load(session, job)
                contracts.require_usable(contract, now)
                if not uploads.is_runnable(model):
                    raise Conflict(f"model {model.id} is {model.status}")
                if partner.status != "active":
                    raise Conflict("partner is not active")
            except DataspaceError as exc:
                mark_failed(session, job, "not_runnable", exc.detail, self._schedule)
                return PlanResult(job_id, "failed", 0, job.error)
            record_event(
                session,
                actor=None,
                action="job.started",
                target=f"job:{job.id}",
                details={"attempt": job.attempt, "partner_key": partner.key},
            )
            return _Claim(job_id=job.id, attempt=job.attempt, terms=terms)

    def _fail_job(self, claim: _Claim, code: str, detail: str, timings: dict[str, float]) -> PlanResult:
        with self.db.transaction() as session:
            job = session.scalar(select(Job).where(Job.id == claim.job_id).with_for_update())
            assert job is not None
            if job.status == "running" and job.attempt == claim.attempt:
                mark_failed(session, job, code, detail, self._schedule)
            return PlanResult(job.id, job.status, 0, job.error, timings)

    # --- run one shard -------------------------------------------------------------------------------------
    def run_shard(
        self,
        job_id: int,
        index: int,
        *,
        before_store: BeforeStore | None = None,
        limits: Limits | None = None,
        stale_after: timedelta | None = None,
        heartbeat_seconds: float | None = None,
        credit_inline: bool = True,
        fail_unexpected: bool = False,
        pool: DecryptPool | None = None,
    ) -> ShardResult:
        """Run one shard to its end state (idempotent: a shard that succeeded is never stored again).

        ``before_store`` is called between the sandbox and the storing transaction (tests use it to act
        "while the job runs"). With ``credit_inline=False`` the usage points are left pending for
        ``credit_pending`` (the worker's next pass). Raises ``ShardBusy`` when another live worker holds the
        shard. Unexpected errors (database or network) propagate, so the broker retries (the claim then goes
        stale and the retry takes it over), unless ``fail_unexpected``: then they fail the job, as nobody
        would retry. ``pool``: decrypt workers to share (``run_job`` keeps one for the job's shards).
        """
        times = self._times(heartbeat_seconds=heartbeat_seconds, stale_after=stale_after)
        claim = self._claim_shard(job_id, index, times)
        if isinstance(claim, ShardResult):
            if claim.status == "succeeded":  # a redelivery after the store: finish what the store started
                if credit_inline:
                    self.credit_shard(job_id, index)
                claim.job_status = self.finish_job(job_id)
            return claim
        terms = claim.terms
        timings: dict[str, float] = {}
        try:
            with Heartbeat(self.db, job_id, claim.attempt, times.heartbeat_seconds, index=index):
                specs = parse_features(terms.features)
                t0 = time.perf_counter()
                with self.db.session() as session:
                    emission = emit(
                        session,
                        self.vault,
                        self.keys,
                        partner_key=terms.partner_key,
                        features=specs,
                        k=terms.k,
                        eligible_subject_ids=claim.subjects,
                        pseudonym_scope=f"job:{job_id}",
                        quantile_cuts=claim.cuts,
                        pool=pool,
                    )
                # The partner's own linked columns, if its contract has them (dataspace.linkage.join).
                emission = linkage_join.attach(
                    self.db, self.vault, emission, contract_id=terms.contract_id, job_id=job_id
                )
                timings["emission"] = time.perf_counter() - t0
                decisions, subject_ids = steps.score(terms.model, emission, terms.schema, limits, timings)
                stats = {k: v for k, v in emission.stats.as_dict().items() if k != "eligible"}
                del emission
                if before_store is not None:
                    before_store(job_id, index)
                t0 = time.perf_counter()
                result = self._store_shard(
                    claim,
                    specs=specs,
                    decision_column=decisions.column("decision"),
                    subject_ids=subject_ids,
                    stats=stats,
                    timings=timings,
                )
                timings["storage"] = time.perf_counter() - t0
        except Abandoned as exc:
            log.info("shard abandoned", extra={"job_id": job_id, "shard": index, "reason": str(exc)})
            return ShardResult(job_id, index, "abandoned", timings=timings)
        except Exception as exc:
            failure = _failure(exc)
            if failure is None:
                if not fail_unexpected:
                    raise
                log.exception("shard failed", extra={"job_id": job_id, "shard": index})
                failure = _internal(exc)
            log.info("shard failed", extra={"job_id": job_id, "shard": index, "reason": failure[0]})
            return self._fail_shard(job_id, index, claim.attempt, *failure, timings=timings)
        if credit_inline:
            t0 = time.perf_counter()
            self.credit_shard(job_id, index)
            timings["points"] = time.perf_counter() - t0
        result.job_status = self.finish_job(job_id)
        result.timings = timings
        return result

    def _claim_shard(self, job_id: int, index: int, times: LeaseTimes) -> _ShardClaim | ShardResult:
        now = utcnow()
        with self.db.transaction() as session:
            job, shard = _lock_shard(session, job_id, index, job_lock="share")
            if shard.status in ("succeeded", "failed") or job.status != "running":
                return ShardResult(job_id, index, shard.status, job.status)
            if not take(shard, now, times):
                exhausted = shard.attempt
                claim = None
            else:
                terms, _, model, _ = _Terms.load(session, job)
                claim = _ShardClaim(
                    job_id=job_id,
                    attempt=shard.attempt,
                    terms=terms,
                    index=index,
                    subjects=unpack_subjects(bytes(shard.subjects)),
                    evaluated_at=datetime.fromisoformat(job.plan["evaluated_at"]),
                    cuts={k: list(v) for k, v in job.plan.get("quantile_cuts", {}).items()},
                )
                runnable = uploads.is_runnable(model)
        if claim is None:
            return self._fail_shard(job_id, index, None, "internal", given_up(exhausted))
        if not runnable:
            return self._fail_shard(job_id, index, claim.attempt, "not_runnable", "the model is no longer runnable")
        return claim

    def _fail_shard(
        self,
        job_id: int,
        index: int,
        attempt: int | None,
        code: str,
        detail: str,
        *,
        timings: dict[str, float] | None = None,
    ) -> ShardResult:
        """The shard failed for good (model error, attempts exhausted): so does the job (the partner sees
        ``code``, stewards ``detail``)."""
        with self.db.transaction() as session:
            job, shard = _lock_shard(session, job_id, index, job_lock="update")
            if shard.status in ("queued", "running") and (attempt is None or shard.attempt == attempt):
                _fail_shard_row(session, job, shard, code, detail, schedule=self._schedule)
            return ShardResult(job_id, index, shard.status, job.status, timings=timings or {})

    def _store_shard(
        self,
        claim: _ShardClaim,
        *,
        specs: list[Any],
        decision_column: pa.ChunkedArray,
        subject_ids: npt.NDArray[np.int64],
        stats: dict[str, Any],
        timings: dict[str, float],
    ) -> ShardResult:
        terms = claim.terms
        fields = feature_fields(specs)
        with self.db.transaction() as session:
            job, shard = _lock_shard(session, claim.job_id, claim.index, job_lock="share")
            if shard.status == "succeeded":
                raise Abandoned("stored already")
            if job.status != "running" or shard.status != "running" or shard.attempt != claim.attempt:
                raise Abandoned(f"job is {job.status}; shard is {shard.status} (attempt {shard.attempt})")
            now = utcnow()
            contract = session.get(Contract, job.contract_id)
            assert contract is not None
            contracts.require_usable(contract, now)  # revoked or expired while running: store nothing

            # Consent again, now, inside the storing transaction: whoever withdrew since the plan is dropped.
            kept_ids, stored = steps.store_decisions(
                session,
                job_id=claim.job_id,
                schema=terms.schema,
                partner_key=terms.partner_key,
                purpose_key=terms.purpose_key,
                specs=specs,
                evaluated_at=claim.evaluated_at,
                subject_ids=subject_ids,
                decision_column=decision_column,
                at=now,
                timings=timings,
            )
            shard.status = "succeeded"
            shard.finished_at = now
            shard.heartbeat_at = now
            shard.points_pending = bool(kept_ids.size) and usage_points(session, fields) > 0
            shard.stats = {**stats, **stored}
            return ShardResult(claim.job_id, claim.index, "succeeded", stats=dict(shard.stats))

    # --- finishing the job, usage points -----------------------------------------------------------------
    def finish_job(self, job_id: int) -> str:
        """If every shard of a running job succeeded, make the job ``succeeded`` (once: under the job row's
        lock) with its audit event and partner events; its points are pending while any shard's are.
        Returns the job's status."""
        with self.db.transaction() as session:
            job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
            if job is None:
                raise NotFound("no such job")
            if job.status != "running" or job.shard_count == 0:
                return job.status
            shards = session.scalars(select(JobShard).where(JobShard.job_id == job_id)).all()
            if len(shards) != job.shard_count or any(s.status != "succeeded" for s in shards):
                return job.status
            now = utcnow()
            stats: dict[str, Any] = {"eligible": int(job.plan.get("eligible", 0)), "shards": len(shards)}
            for key in _SUMMED:
                stats[key] = sum(int(s.stats.get(key, 0)) for s in shards)
            contract = session.get(Contract, job.contract_id)
            assert contract is not None
            fields = steps.contract_fields(contract)
            job.status = "succeeded"
            job.finished_at = now
            job.heartbeat_at = now
            job.stats = stats
            job.error = None
            job.error_detail = None
            session.flush()
            _settle_points(session, job)
            record_event(
                session,
                actor=None,
                action="job.succeeded",
                target=f"job:{job.id}",
                details={
                    "decisions": stats["decisions"],
                    "dropped_withdrawn": stats["dropped_withdrawn"],
                    "fields": fields,
                    "shards": len(shards),
                },
            )
            job_completed(session, job, self._schedule)
        return "succeeded"

    def credit_shard(self, job_id: int, index: int) -> int:
        """Credit the usage points of one stored shard's decided subjects (the data use happened when the
        shard stored its decisions and ledger entries), in bounded transactions; then settle the job's
        points state.

        Each shard's worker credits its own subjects right after storing, so a 10M-subject job's crediting
        is spread over the workers like its scoring, and no broker message holds more than one shard's
        worth. Idempotent (``award_usage`` is, per (job, subject)): a crash midway is finished by
        ``credit_pending``. Returns how many customers this call credited."""
        with self.db.session() as session:
            shard = session.get(JobShard, (job_id, index))
            job = session.get(Job, job_id)
            if shard is None or job is None or shard.status != "succeeded" or not shard.points_pending:
                return 0
            contract = session.get(Contract, job.contract_id)
            assert contract is not None
            planned = unpack_subjects(shard.subjects)
            ids: list[int] = []
            if planned.size:  # shards are disjoint ranges of the sorted eligible ids
                ids = _decided(session, job_id, int(planned[0]), int(planned[-1]))
        credited = steps.credit_subjects(self.db, job_id, steps.contract_fields(contract), ids)
        with self.db.transaction() as session:
            job, shard = _lock_shard(session, job_id, index, job_lock="update")
            if shard.points_pending:
                shard.points_pending = False
                shard.stats = {**shard.stats, "points_credited": int(shard.stats.get("points_credited", 0)) + credited}
                session.flush()
                _settle_points(session, job)
        return credited

    def credit_pending(self) -> list[int]:
        """Finish the usage points of succeeded jobs whose crediting stopped midway (a crash between storing
        and crediting), shard by shard. Returns the jobs touched."""
        with self.db.session() as session:
            pending = session.scalars(
                select(Job.id).where(Job.status == "succeeded", Job.points_pending.is_(True)).order_by(Job.id)
            ).all()
            shard_rows = session.execute(
                select(JobShard.job_id, JobShard.index)
                .where(JobShard.job_id.in_(pending), JobShard.points_pending.is_(True))
                .order_by(JobShard.job_id, JobShard.index)
            ).all()
        for job_id, index in shard_rows:
            self.credit_shard(job_id, index)
        return list(pending)

    # --- recovery and dispatch ------------------------------------------------------------------------------
    def recover(self, *, stale_after: timedelta | None = None, now: datetime | None = None) -> dict[str, list[Any]]:
        """Re-queue the work of processes that died (a stale lease: ``lease.verdict``), or fail it after
        ``MAX_ATTEMPTS``: a job still being planned goes back to ``queued`` at its next attempt, a running
        shard to ``queued`` (the dispatcher, or the in-process queue, runs it again). Also finishes jobs
        whose shards all succeeded but whose finishing step was cut short. Safe at any time, in any number
        of processes at once: a live lease keeps its heartbeat fresh."""
        times = self._times(stale_after=stale_after)
        now = now or utcnow()
        requeued: list[int] = []
        requeued_shards: list[tuple[int, int]] = []
        failed: list[int] = []
        complete: list[int] = []
        with self.db.transaction() as session:
            jobs = session.scalars(
                select(Job).where(Job.status == "running").order_by(Job.id).with_for_update(skip_locked=True)
            ).all()
            for job in jobs:
                leases: list[Job] | list[JobShard] = [job]  # not planned yet: the job holds the lease
                if job.shard_count:
                    shards = session.scalars(
                        select(JobShard).where(JobShard.job_id == job.id).order_by(JobShard.index).with_for_update()
                    ).all()
                    if shards and all(s.status == "succeeded" for s in shards):
                        complete.append(job.id)
                        continue
                    leases = [s for s in shards if s.status == "running"]
                for row in leases:
                    action = verdict(row, now, times)
                    if action == "live":
                        continue
                    if action == "fail":
                        detail = given_up(row.attempt)
                        if isinstance(row, JobShard):
                            _fail_shard_row(session, job, row, "internal", detail, schedule=self._schedule)
                        else:
                            mark_failed(session, job, "internal", detail, self._schedule)
                        failed.append(job.id)
                        break
                    row.status = "queued"
                    row.heartbeat_at = None
                    row.dispatched_at = None  # broker mode: send the message again
                    if isinstance(row, JobShard):
                        requeued_shards.append((job.id, row.index))
                        continue
                    job.attempt += 1
                    job.started_at = None
                    session.flush()
                    record_event(
                        session,
                        actor=None,
                        action="job.requeued",
                        target=f"job:{job.id}",
                        details={"attempt": job.attempt, "reason": "stale heartbeat"},
                    )
                    requeued.append(job.id)
        finished = [j for j in complete if self.finish_job(j) == "succeeded"]
        return {"requeued": requeued, "requeued_shards": requeued_shards, "failed": failed, "finished": finished}

    def dispatch_pending(
        self,
        *,
        send_plan: SendPlan,
        send_shard: SendShard,
        now: datetime | None = None,
        redispatch_after: timedelta = REDISPATCH_AFTER,
        grace: timedelta = SEND_GRACE,
        limit: int = 500,
    ) -> dict[str, list[Any]]:
        """The outbox sweep (every API replica runs it in broker mode): send a "plan" message for each
        queued job not yet sent, and a "run" message for each queued shard that its planner did not send (it
        crashed, or the broker was down) or that nobody ran for ``redispatch_after``. A message counts as
        sent once the broker confirmed it; a duplicate is harmless (claims are atomic, stores are guarded).
        Stops at the first failed send: the broker is down, the next sweep tries again."""
        now = now or utcnow()
        sent_jobs: list[int] = []
        sent_shards: list[tuple[int, int]] = []
        with self.db.transaction() as session:
            jobs = session.scalars(
                select(Job)
                .where(
                    Job.status == "queued",
                    or_(Job.dispatched_at.is_(None), Job.dispatched_at < now - redispatch_after),
                )
                .order_by(Job.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            try:
                for job in jobs:
                    send_plan(job.id)
                    job.dispatched_at = now
                    sent_jobs.append(job.id)
                planned_before = select(Job.id).where(Job.status == "running", Job.heartbeat_at < now - grace)
                shards = session.scalars(
                    select(JobShard)
                    .where(
                        JobShard.status == "queued",
                        or_(
                            and_(JobShard.dispatched_at.is_(None), JobShard.job_id.in_(planned_before)),
                            and_(
                                JobShard.dispatched_at < now - redispatch_after,
                                JobShard.job_id.in_(select(Job.id).where(Job.status == "running")),
                            ),
                        ),
                    )
                    .order_by(JobShard.job_id, JobShard.index)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).all()
                for shard in shards:
                    send_shard(shard.job_id, shard.index)
                    shard.dispatched_at = now
                    sent_shards.append((shard.job_id, shard.index))
            except Exception:  # broker down: keep what was confirmed, retry on the next sweep
                log.warning("job dispatch stopped: the broker did not confirm a message", exc_info=True)
        return {"jobs": sent_jobs, "shards": sent_shards}

    def send_planned(self, job_id: int, send_shard: SendShard) -> list[int]:
        """The planner sends its job's queued shards at once (the sweep covers a crash or a broker outage)."""
        with self.db.session() as session:
            indexes = session.scalars(
                select(JobShard.index)
                .where(JobShard.job_id == job_id, JobShard.status == "queued", JobShard.dispatched_at.is_(None))
                .order_by(JobShard.index)
            ).all()
        sent: list[int] = []
        for index in indexes:
            send_shard(job_id, index)
            sent.append(index)
        if sent:
            now = utcnow()
            with self.db.transaction() as session:
                session.execute(
                    update(JobShard)
                    .where(JobShard.job_id == job_id, JobShard.index.in_(sent), JobShard.dispatched_at.is_(None))
                    .values(dispatched_at=now)
                    .execution_options(synchronize_session=False)
                )
        return sent


def _fail_shard_row(
    session: Session, job: Job, shard: JobShard, code: str, detail: str, *, schedule: ReleaseSchedule
) -> None:
    """Fail a locked shard for good, and with it its job if that still runs."""
    shard.status = "failed"
    shard.error = detail[:500]
    shard.finished_at = utcnow()
    if job.status == "running":
        mark_failed(session, job, code, f"shard {shard.index}: {detail}", schedule)


def _decided(session: Session, job_id: int, first: int, last: int) -> list[int]:
    """The job's decided subjects in ``first..last``, ascending."""
    return list(
        session.scalars(
            select(Decision.subject_id)
            .where(Decision.job_id == job_id, Decision.subject_id >= first, Decision.subject_id <= last)
            .order_by(Decision.subject_id)
        )
    )


def _settle_points(session: Session, job: Job) -> None:
    """A succeeded job's points state from its shards' (the job row is locked)."""
    if job.status != "succeeded":
        return
    rows = session.execute(select(JobShard.points_pending, JobShard.stats).where(JobShard.job_id == job.id)).all()
    job.points_pending = any(pending for pending, _ in rows)
    job.stats = {**job.stats, "points_credited": sum(int(stats.get("points_credited", 0)) for _, stats in rows)}


__all__ = [
    "BeforeStore",
    "JobEngine",
    "PlanResult",
    "RunResult",
    "ShardBusy",
    "ShardResult",
]
