"""Sharded jobs: plan once, run shards on any worker, store each shard exactly once, finish the job once.

``plan_job``: claim the job (queued -> running, as the single-run path), evaluate consent once (the plan's
``evaluated_at``), compute the quantile cut points over the eligible population (a uniform sample of
``PLAN_SAMPLE`` subjects above that size: the cut points are population parameters every shard must
share), split the eligible ids into shards of about ``shard_subjects`` and write shards + plan in one
transaction.

``run_shard``: claim the shard (queued, or running with a stale heartbeat: its worker died), emit its
subjects' features with the plan's cut points, run the sandbox, validate, then ONE storing transaction
(consent re-check since the plan, decisions, usage ledger, shard ``succeeded``). That transaction stores
only for the attempt holding the claim and only if the shard has not succeeded: a redelivered or
duplicated message stores nothing again. The same worker then credits the usage points of the shard's
decided subjects (``credit_shard``: bounded by the shard, idempotent), and ``finish_job``, under a lock on
the job row, turns the job ``succeeded`` once every shard has (audit, events), whichever shard's worker
gets there first. A shard's subjects earn their points when the shard stores (that use happened), even if
another shard of the job later fails for good.

k-anonymity is applied per shard: every feature combination a sandbox run sees is shared by at least k
rows of that run's input, hence of the job; on small shards this suppresses a little more than a single
pass over the whole population would (shards are ~250k subjects in production, where it is negligible).

Lock order, everywhere: the job row, then shard rows (the storing transaction takes the job row FOR
SHARE so shards of one job store concurrently, while cancel / finish / recovery take it FOR UPDATE).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlalchemy import and_, or_, select, update

from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.emission import emit, parse_features, quantile_cut_points
from dataspace.errors import DataspaceError, NotFound
from dataspace.jobs import contracts, uploads
from dataspace.jobs.eligibility import eligible_subjects
from dataspace.jobs.models import Contract, Decision, Job, JobShard, PartnerModel
from dataspace.jobs.outcomes import ReleaseSchedule, reason_of_sandbox
from dataspace.jobs.runner import (
    MAX_ATTEMPTS,
    RunResult,
    _Heartbeat,
    _mark_failed,
    contract_fields,
    credit_points,
    credit_subjects,
    feature_fields,
    job_completed,
    score,
    store_decisions,
)
from dataspace.jobs.runner import _claim as claim_job
from dataspace.jobs.runner import _fail as fail_job
from dataspace.linkage import join as linkage_join
from dataspace.partners.models import Partner
from dataspace.points.earning import usage_points
from sandbox import (
    DecisionSchema,
    JobFailed,
    Limits,
    ModelRejected,
    ModelSpec,
    OnnxModel,
    PythonModule,
    SandboxUnavailable,
)

log = logging.getLogger("dataspace.jobs.shards")

PLAN_SAMPLE = 500_000  # subjects whose values set the quantile cut points (all of them below this)
MAX_SHARDS = 10_000
REDISPATCH_AFTER = timedelta(minutes=15)  # a message the broker confirmed but nobody ran: send again
SEND_GRACE = timedelta(seconds=10)  # the planner sends its shards itself; the sweep waits this long first

BeforeShardStore = Callable[[Context, int, int], None]
SendPlan = Callable[[int], None]
SendShard = Callable[[int, int], None]


class ShardBusy(Exception):
    """Another worker holds a live claim on the shard (fresh heartbeat): try again later."""


class _Abandoned(Exception):
    """The claim was lost (job cancelled or failed, shard taken over or stored already): store nothing."""


@dataclass
class PlanResult:
    job_id: int
    status: str
    shards: int = 0
    error: str | None = None


@dataclass
class ShardResult:
    job_id: int
    index: int
    status: str  # the shard's status after this call, or "abandoned"
    job_status: str = "running"
    stats: dict[str, Any] = field(default_factory=dict)


# --- subject lists -------------------------------------------------------------------------------------
def pack_subjects(ids: npt.ArrayLike) -> bytes:
    """Ascending ids as zlib-compressed deltas (a dense id range packs to ~12 bytes per thousand ids)."""
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    deltas = np.diff(arr, prepend=np.int64(0)) if arr.size else arr
    return zlib.compress(deltas.astype("<i8").tobytes(), 6)


def unpack_subjects(blob: bytes) -> npt.NDArray[np.int64]:
    return np.cumsum(np.frombuffer(zlib.decompress(blob), dtype="<i8")).astype(np.int64)


def split_subjects(ids: npt.NDArray[np.int64], shard_subjects: int) -> list[npt.NDArray[np.int64]]:
    """Contiguous, balanced slices of the ascending eligible ids; always at least one (maybe empty)."""
    if shard_subjects < 1:
        raise ValueError("shard_subjects must be positive")
    count = max(1, min(MAX_SHARDS, -(-ids.size // shard_subjects)))
    return [np.ascontiguousarray(p) for p in np.array_split(ids, count)]


def _sample(ids: npt.NDArray[np.int64], job_id: int) -> npt.NDArray[np.int64]:
    if ids.size <= PLAN_SAMPLE:
        return ids
    rng = np.random.default_rng(job_id)  # deterministic: a re-planned job gets the same cut points
    return np.sort(rng.choice(ids, PLAN_SAMPLE, replace=False))


# --- plan ----------------------------------------------------------------------------------------------
def plan_job(
    ctx: Context,
    job_id: int,
    *,
    shard_subjects: int | None = None,
    heartbeat_seconds: float | None = None,
) -> PlanResult:
    """Claim a queued job and split it into queued shards. Raises ``Conflict`` if the job is not queued
    (a duplicate message, or another planner won), ``NotFound`` if there is no such job."""
    claimed = claim_job(ctx, job_id)
    if isinstance(claimed, RunResult):
        return PlanResult(job_id, claimed.status, 0, claimed.error)
    size = shard_subjects or ctx.settings.job_shard_subjects
    try:
        with _Heartbeat(ctx, job_id, claimed.attempt, heartbeat_seconds or ctx.settings.job_heartbeat_seconds):
            specs = parse_features(claimed.features)
            evaluated_at = utcnow()
            with ctx.db.session() as session:
                eligible = eligible_subjects(
                    session,
                    partner_key=claimed.partner_key,
                    purpose_key=claimed.purpose_key,
                    specs=specs,
                    at=evaluated_at,
                )
                sample = _sample(eligible, job_id)
                cuts = quantile_cut_points(
                    session,
                    ctx.vault,
                    ctx.keys,
                    partner_key=claimed.partner_key,
                    features=specs,
                    subject_ids=sample,
                )
        parts = split_subjects(eligible, size)
        with ctx.db.transaction() as session:
            job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
            assert job is not None
            if job.status != "running" or job.attempt != claimed.attempt:
                return PlanResult(job_id, job.status, 0, job.error)  # cancelled, or recovered meanwhile
            session.add_all(
                JobShard(
                    job_id=job_id, index=i, status="queued", attempt=0, size=int(p.size), subjects=pack_subjects(p)
                )
                for i, p in enumerate(parts)
            )
            now = utcnow()
            job.shard_count = len(parts)
            job.heartbeat_at = now  # from here on shards carry the heartbeats; this dates the plan
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
        return PlanResult(job_id, "running", len(parts))
    except DataspaceError as exc:
        return PlanResult(job_id, *_failed(fail_job(ctx, claimed, "not_runnable", exc.detail, {})))
    except Exception as exc:
        log.exception("job planning failed", extra={"job_id": job_id})
        detail = f"internal error while planning the job: {type(exc).__name__}"
        return PlanResult(job_id, *_failed(fail_job(ctx, claimed, "internal", detail, {})))


def _failed(result: RunResult) -> tuple[str, int, str | None]:
    return result.status, 0, result.error


# --- run one shard -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ShardClaim:
    job_id: int
    index: int
    attempt: int
    partner_key: str
    purpose_key: str
    features: list[dict[str, Any]]
    schema: DecisionSchema
    k: int
    model: ModelSpec
    subjects: npt.NDArray[np.int64]
    evaluated_at: datetime
    cuts: dict[str, list[float]]


class _ShardHeartbeat(_Heartbeat):
    def __init__(self, ctx: Context, claim: _ShardClaim, every: float) -> None:
        super().__init__(ctx, claim.job_id, claim.attempt, every)
        self.index = claim.index

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self.ctx.db.transaction() as session:
                    session.execute(
                        update(JobShard)
                        .where(
                            JobShard.job_id == self.job_id,
                            JobShard.index == self.index,
                            JobShard.status == "running",
                            JobShard.attempt == self.attempt,
                        )
                        .values(heartbeat_at=utcnow())
                        .execution_options(synchronize_session=False)
                    )
            except Exception:  # noqa: BLE001 - a missed beat only makes a takeover more eager
                log.warning("shard heartbeat failed", extra={"job_id": self.job_id, "shard": self.index})


def _lock_shard(session: Any, job_id: int, index: int, *, job_lock: str) -> tuple[Job, JobShard]:
    stmt = select(Job).where(Job.id == job_id)
    job = session.scalar(stmt.with_for_update(read=job_lock == "share"))
    if job is None:
        raise NotFound("no such job")
    shard = session.scalar(select(JobShard).where(JobShard.job_id == job_id, JobShard.index == index).with_for_update())
    if shard is None:
        raise NotFound("no such shard")
    return job, shard


def _claim_shard(ctx: Context, job_id: int, index: int, stale_after: timedelta) -> _ShardClaim | ShardResult:
    now = utcnow()
    exhausted, runnable = False, False
    claim: _ShardClaim | None = None
    with ctx.db.transaction() as session:
        job, shard = _lock_shard(session, job_id, index, job_lock="share")
        if shard.status in ("succeeded", "failed") or job.status != "running":
            return ShardResult(job_id, index, shard.status, job.status)
        if shard.status == "running" and shard.heartbeat_at is not None and now - shard.heartbeat_at < stale_after:
            raise ShardBusy(f"job {job_id} shard {index} is running elsewhere")
        if shard.attempt >= MAX_ATTEMPTS:
            exhausted = True
        else:
            shard.status = "running"
            shard.attempt += 1
            shard.started_at = now
            shard.heartbeat_at = now
            shard.error = None
            contract = session.get(Contract, job.contract_id)
            model = session.get(PartnerModel, job.model_id)
            partner = session.get(Partner, job.partner_id)
            assert contract is not None
            assert model is not None
            assert partner is not None
            spec: ModelSpec = (
                OnnxModel(bytes(model.data))
                if model.kind == "onnx"
                else PythonModule(bytes(model.data).decode("utf-8"), approved=model.status == "approved")
            )
            claim = _ShardClaim(
                job_id=job_id,
                index=index,
                attempt=shard.attempt,
                partner_key=partner.key,
                purpose_key=contract.purpose_key,
                features=list(contract.features),
                schema=contracts.decision_schema_of(contract.decision_schema),
                k=contract.k_min,
                model=spec,
                subjects=unpack_subjects(bytes(shard.subjects)),
                evaluated_at=datetime.fromisoformat(job.plan["evaluated_at"]),
                cuts={k: list(v) for k, v in job.plan.get("quantile_cuts", {}).items()},
            )
            runnable = uploads.is_runnable(model)
    if exhausted:
        reason = f"a worker stopped during shard {index} {MAX_ATTEMPTS} times; giving up"
        return _fail_shard(ctx, job_id, index, None, "internal", detail=reason)
    assert claim is not None
    if not runnable:
        return _fail_shard(ctx, job_id, index, claim.attempt, "not_runnable", detail="the model is no longer runnable")
    return claim


def _fail_shard(ctx: Context, job_id: int, index: int, attempt: int | None, code: str, *, detail: str) -> ShardResult:
    """The shard failed for good (model error, attempts exhausted): so does the job (the partner sees
    ``code``, stewards ``detail``)."""
    with ctx.db.transaction() as session:
        job, shard = _lock_shard(session, job_id, index, job_lock="update")
        if shard.status in ("queued", "running") and (attempt is None or shard.attempt == attempt):
            shard.status = "failed"
            shard.error = detail[:500]
            shard.finished_at = utcnow()
            if job.status == "running":
                _mark_failed(session, job, code, f"shard {index}: {detail}", ReleaseSchedule.of(ctx.settings))
        return ShardResult(job_id, index, shard.status, job.status)


def run_shard(
    ctx: Context,
    job_id: int,
    index: int,
    *,
    before_store: BeforeShardStore | None = None,
    limits: Limits | None = None,
    stale_after: timedelta | None = None,
    heartbeat_seconds: float | None = None,
    credit_inline: bool = True,
) -> ShardResult:
    """Run one shard to its end state (idempotent: a shard that succeeded is never stored again).

    Raises ``ShardBusy`` when another live worker holds the shard. Infrastructure errors (database or
    network) propagate, so the broker retries; the claim then goes stale and the retry takes it over.
    """
    stale = stale_after or timedelta(seconds=ctx.settings.job_stale_seconds)
    claim = _claim_shard(ctx, job_id, index, stale)
    if isinstance(claim, ShardResult):
        if claim.status == "succeeded":  # a redelivery after the store: finish what the store started
            if credit_inline:
                credit_shard(ctx, job_id, index)
            claim.job_status = finish_job(ctx, job_id)
        return claim
    try:
        with _ShardHeartbeat(ctx, claim, heartbeat_seconds or ctx.settings.job_heartbeat_seconds):
            specs = parse_features(claim.features)
            with ctx.db.session() as session:
                emission = emit(
                    session,
                    ctx.vault,
                    ctx.keys,
                    partner_key=claim.partner_key,
                    features=specs,
                    k=claim.k,
                    eligible_subject_ids=claim.subjects,
                    pseudonym_scope=f"job:{job_id}",
                    quantile_cuts=claim.cuts,
                )
            emission = linkage_join.attach(ctx.db, ctx.keys, emission, job_id=job_id)  # partner's own columns
            decisions, subject_ids = score(claim.model, emission, claim.schema, limits)
            stats = {k: v for k, v in emission.stats.as_dict().items() if k != "eligible"}
            del emission
            if before_store is not None:
                before_store(ctx, job_id, index)
            result = _store_shard(
                ctx,
                claim,
                specs=specs,
                decision_column=decisions.column("decision"),
                subject_ids=subject_ids,
                stats=stats,
            )
    except _Abandoned as exc:
        log.info("shard abandoned", extra={"job_id": job_id, "shard": index, "reason": str(exc)})
        return ShardResult(job_id, index, "abandoned")
    except (JobFailed, ModelRejected) as exc:
        log.info("shard failed in the sandbox", extra={"job_id": job_id, "shard": index, "reason": exc.reason})
        detail = f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
        return _fail_shard(ctx, job_id, index, claim.attempt, reason_of_sandbox(exc.reason), detail=detail)
    except SandboxUnavailable as exc:
        return _fail_shard(ctx, job_id, index, claim.attempt, "sandbox_unavailable", detail=exc.reason)
    except DataspaceError as exc:
        return _fail_shard(ctx, job_id, index, claim.attempt, "not_runnable", detail=exc.detail)
    if credit_inline:
        credit_shard(ctx, job_id, index)
    result.job_status = finish_job(ctx, job_id)
    return result


def _store_shard(
    ctx: Context,
    claim: _ShardClaim,
    *,
    specs: list[Any],
    decision_column: pa.ChunkedArray,
    subject_ids: npt.NDArray[np.int64],
    stats: dict[str, Any],
) -> ShardResult:
    fields = feature_fields(specs)
    with ctx.db.transaction() as session:
        job, shard = _lock_shard(session, claim.job_id, claim.index, job_lock="share")
        if shard.status == "succeeded":
            raise _Abandoned("stored already")
        if job.status != "running" or shard.status != "running" or shard.attempt != claim.attempt:
            raise _Abandoned(f"job is {job.status}; shard is {shard.status} (attempt {shard.attempt})")
        now = utcnow()
        contract = session.get(Contract, job.contract_id)
        assert contract is not None
        contracts.require_usable(contract, now)  # revoked or expired while running: store nothing

        # Consent again, now, inside the storing transaction: whoever withdrew since the plan is dropped.
        kept_ids, stored = store_decisions(
            session,
            job_id=claim.job_id,
            schema=claim.schema,
            partner_key=claim.partner_key,
            purpose_key=claim.purpose_key,
            specs=specs,
            evaluated_at=claim.evaluated_at,
            subject_ids=subject_ids,
            decision_column=decision_column,
            at=now,
        )
        shard.status = "succeeded"
        shard.finished_at = now
        shard.heartbeat_at = now
        shard.points_pending = bool(kept_ids.size) and usage_points(session, fields) > 0
        shard.stats = {**stats, **stored}
        return ShardResult(claim.job_id, claim.index, "succeeded", stats=dict(shard.stats))


_SUMMED = ("loaded", "unreadable", "emitted", "suppressed_rows", "suppressed_cells", "decisions")
_SUMMED_MORE = ("dropped_withdrawn", "ledger_entries")


# --- usage points, shard by shard ------------------------------------------------------------------------
def credit_shard(ctx: Context, job_id: int, index: int) -> int:
    """Credit the usage points of one stored shard's decided subjects (the data use happened when the shard
    stored its decisions and ledger entries), in bounded transactions; then settle the job's points state.

    Each shard's worker credits its own subjects right after storing, so a 10M-subject job's crediting is
    spread over the workers like its scoring, and no broker message holds more than one shard's worth.
    Idempotent (``award_usage`` is, per (job, subject)): a crash midway is finished by ``credit_pending``.
    Returns how many customers this call credited."""
    with ctx.db.session() as session:
        shard = session.get(JobShard, (job_id, index))
        job = session.get(Job, job_id)
        if shard is None or job is None or shard.status != "succeeded" or not shard.points_pending:
            return 0
        contract = session.get(Contract, job.contract_id)
        assert contract is not None
        fields = contract_fields(contract)
        planned = unpack_subjects(shard.subjects)
        ids: list[int] = []
        if planned.size:  # shards are disjoint ranges of the sorted eligible ids
            ids = list(
                session.scalars(
                    select(Decision.subject_id)
                    .where(
                        Decision.job_id == job_id,
                        Decision.subject_id >= int(planned[0]),
                        Decision.subject_id <= int(planned[-1]),
                    )
                    .order_by(Decision.subject_id)
                )
            )
    credited = credit_subjects(ctx, job_id, fields, ids)
    with ctx.db.transaction() as session:
        job, shard = _lock_shard(session, job_id, index, job_lock="update")
        if shard.points_pending:
            shard.points_pending = False
            shard.stats = {**shard.stats, "points_credited": int(shard.stats.get("points_credited", 0)) + credited}
            session.flush()
            _settle_points(session, job)
    return credited


def _settle_points(session: Any, job: Job) -> None:
    """A succeeded sharded job's points state from its shards' (the job row is locked)."""
    if job.status != "succeeded":
        return
    rows = session.execute(select(JobShard.points_pending, JobShard.stats).where(JobShard.job_id == job.id)).all()
    job.points_pending = any(pending for pending, _ in rows)
    job.stats = {**job.stats, "points_credited": sum(int(stats.get("points_credited", 0)) for _, stats in rows)}


def credit_pending(ctx: Context) -> list[int]:
    """Finish the usage points of succeeded jobs whose crediting stopped midway (a crash between storing
    and crediting): single-run jobs as a whole, sharded jobs shard by shard. Returns the jobs touched."""
    with ctx.db.session() as session:
        pending = session.execute(
            select(Job.id, Job.shard_count)
            .where(Job.status == "succeeded", Job.points_pending.is_(True))
            .order_by(Job.id)
        ).all()
        shard_rows = session.execute(
            select(JobShard.job_id, JobShard.index)
            .where(JobShard.job_id.in_([j for j, n in pending if n]), JobShard.points_pending.is_(True))
            .order_by(JobShard.job_id, JobShard.index)
        ).all()
    for job_id, shard_count in pending:
        if not shard_count:
            credit_points(ctx, job_id)
    for job_id, index in shard_rows:
        credit_shard(ctx, job_id, index)
    return [j for j, _ in pending]


def finish_job(ctx: Context, job_id: int) -> str:
    """If every shard of a running sharded job succeeded, make the job ``succeeded`` (once: under the job
    row's lock) with its audit event and partner events; its points are pending while any shard's are.
    Returns the job's status."""
    with ctx.db.transaction() as session:
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
        for key in (*_SUMMED, *_SUMMED_MORE):
            stats[key] = sum(int(s.stats.get(key, 0)) for s in shards)
        contract = session.get(Contract, job.contract_id)
        assert contract is not None
        fields = contract_fields(contract)
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
        job_completed(session, job, ReleaseSchedule.of(ctx.settings))
    return "succeeded"


# --- in-process execution, recovery and dispatch ---------------------------------------------------------
def run_sharded(ctx: Context, job_id: int, *, shard_subjects: int | None = None, **kw: Any) -> str:
    """Plan a queued job and run its shards one after the other in this process (the same code path the
    broker's workers take, without a broker). Returns the job's final status."""
    plan = plan_job(ctx, job_id, shard_subjects=shard_subjects)
    status = plan.status
    for index in range(plan.shards):
        status = run_shard(ctx, job_id, index, **kw).job_status
    return status


def recover_shards(
    ctx: Context, *, stale_after: timedelta | None = None, now: datetime | None = None
) -> dict[str, list[Any]]:
    """For running sharded jobs: re-queue shards whose worker stopped (stale heartbeat; the dispatcher
    sends them again), fail them after ``MAX_ATTEMPTS``, and finish jobs whose shards all succeeded but
    whose finishing step was cut short. Safe in any number of processes at once."""
    stale = stale_after or timedelta(seconds=ctx.settings.job_stale_seconds)
    now = now or utcnow()
    requeued: list[tuple[int, int]] = []
    failed: list[int] = []
    complete: list[int] = []
    with ctx.db.transaction() as session:
        jobs = session.scalars(
            select(Job)
            .where(Job.status == "running", Job.shard_count > 0)
            .order_by(Job.id)
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            shards = session.scalars(
                select(JobShard).where(JobShard.job_id == job.id).order_by(JobShard.index).with_for_update()
            ).all()
            if shards and all(s.status == "succeeded" for s in shards):
                complete.append(job.id)
                continue
            for shard in shards:
                beat = shard.heartbeat_at or shard.started_at
                if shard.status != "running" or (beat is not None and now - beat < stale):
                    continue
                if shard.attempt >= MAX_ATTEMPTS:
                    shard.status = "failed"
                    shard.error = f"a worker stopped during the shard {shard.attempt} times; giving up"
                    shard.finished_at = now
                    _mark_failed(session, job, "internal", shard.error, ReleaseSchedule.of(ctx.settings))
                    failed.append(job.id)
                    break
                shard.status = "queued"
                shard.heartbeat_at = None
                shard.dispatched_at = None
                requeued.append((job.id, shard.index))
    finished = [j for j in complete if finish_job(ctx, j) == "succeeded"]
    return {"requeued": requeued, "failed": failed, "finished": finished}


def dispatch_pending(
    ctx: Context,
    *,
    send_plan: SendPlan,
    send_shard: SendShard,
    now: datetime | None = None,
    redispatch_after: timedelta = REDISPATCH_AFTER,
    grace: timedelta = SEND_GRACE,
    limit: int = 500,
) -> dict[str, list[Any]]:
    """The outbox sweep (every API replica runs it): send a "plan" message for each queued job not yet
    sent, and a "run" message for each queued shard that its planner did not send (it crashed, or the
    broker was down) or that nobody ran for ``redispatch_after``. A message counts as sent once the broker
    confirmed it; a duplicate is harmless (claims are atomic, stores are guarded). Stops at the first
    failed send: the broker is down, the next sweep tries again."""
    now = now or utcnow()
    sent_jobs: list[int] = []
    sent_shards: list[tuple[int, int]] = []
    with ctx.db.transaction() as session:
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


def send_planned(ctx: Context, job_id: int, send_shard: SendShard) -> list[int]:
    """The planner sends its job's queued shards at once (the sweep covers a crash or a broker outage)."""
    with ctx.db.session() as session:
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
        with ctx.db.transaction() as session:
            session.execute(
                update(JobShard)
                .where(JobShard.job_id == job_id, JobShard.index.in_(sent), JobShard.dispatched_at.is_(None))
                .values(dispatched_at=now)
                .execution_options(synchronize_session=False)
            )
    return sent


__all__ = [
    "PlanResult",
    "ShardBusy",
    "ShardResult",
    "dispatch_pending",
    "finish_job",
    "pack_subjects",
    "plan_job",
    "recover_shards",
    "run_shard",
    "run_sharded",
    "send_planned",
    "split_subjects",
    "unpack_subjects",
]
