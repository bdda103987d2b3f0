"""Running a job: claim -> eligible subjects -> emission -> sandbox -> validation -> one storing transaction.

Nothing a job produces is stored until its last step, where decisions, ledger entries, usage points, the
audit event and the ``succeeded`` state are written in ONE transaction, after consent is checked again for
the decided subjects (decisions of subjects who withdrew while the job ran are dropped). A failure at any
step leaves only ``failed`` with a reason. A server that dies mid-job leaves ``running`` with a heartbeat
that stops moving; ``recover_jobs`` (run at start-up) re-queues such jobs or fails them after
``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.db import bulk_insert, flush_deferred, utcnow
from dataspace.emission import emit, parse_features
from dataspace.emission.service import Emission, PseudonymMap
from dataspace.errors import Conflict, DataspaceError, NotFound
from dataspace.events import service as events
from dataspace.events.models import OutboxEvent, WebhookDelivery
from dataspace.jobs import contracts, uploads
from dataspace.jobs.eligibility import eligible_subjects, still_eligible
from dataspace.jobs.ledger import append_job_usage
from dataspace.jobs.models import Contract, Decision, Job, PartnerModel
from dataspace.jobs.outcomes import REASONS, ReleaseSchedule, reason_of_sandbox
from dataspace.linkage import join as linkage_join
from dataspace.observability import metrics
from dataspace.partners.models import Partner
from dataspace.points.earning import award_usage, usage_points
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
from sandbox import (
    run_job as sandbox_run,
)

log = logging.getLogger("dataspace.jobs")

HEARTBEAT_SECONDS = 5.0
STALE_AFTER = timedelta(seconds=60)
MAX_ATTEMPTS = 3
POINTS_CHUNK = 5_000

BeforeStore = Callable[[Context, int], None]


@dataclass
class RunResult:
    job_id: int
    status: str
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Claimed:
    job_id: int
    attempt: int
    partner_key: str
    purpose_key: str
    features: list[dict[str, Any]]
    schema: DecisionSchema
    k: int
    model: ModelSpec


class _Abandoned(Exception):
    """The job was cancelled or taken over (after recovery) while we ran: store nothing, change nothing."""


def _claim(ctx: Context, job_id: int) -> _Claimed | RunResult:
    now = utcnow()
    with ctx.db.transaction() as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="running", started_at=now, heartbeat_at=now, error=None)
            .execution_options(synchronize_session=False)
        )
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound("no such job")
        if getattr(claimed, "rowcount", 0) != 1:
            raise Conflict(f"job {job_id} is {job.status}, not queued")
        contract = session.get(Contract, job.contract_id)
        model = session.get(PartnerModel, job.model_id)
        partner = session.get(Partner, job.partner_id)
        assert contract is not None
        assert model is not None
        assert partner is not None
        try:
            contracts.require_usable(contract, now)
            if not uploads.is_runnable(model):
                raise Conflict(f"model {model.id} is {model.status}")
            if partner.status != "active":
                raise Conflict("partner is not active")
            schema = contracts.decision_schema_of(contract.decision_schema)
        except DataspaceError as exc:
            _mark_failed(session, job, "not_runnable", exc.detail, ReleaseSchedule.of(ctx.settings))
            return RunResult(job_id, "failed", job.error)
        record_event(
            session,
            actor=None,
            action="job.started",
            target=f"job:{job.id}",
            details={"attempt": job.attempt, "partner_key": partner.key},
        )
        spec: ModelSpec = (
            OnnxModel(bytes(model.data))
            if model.kind == "onnx"
            else PythonModule(bytes(model.data).decode("utf-8"), approved=model.status == "approved")
        )
        return _Claimed(
            job_id=job.id,
            attempt=job.attempt,
            partner_key=partner.key,
            purpose_key=contract.purpose_key,
            features=list(contract.features),
            schema=schema,
            k=contract.k_min,
            model=spec,
        )


def _mark_failed(session: Session, job: Job, code: str, detail: str, schedule: ReleaseSchedule) -> None:
    """Fail the job: the partner gets ``code`` (one of ``outcomes.REASONS``), stewards and the audit trail
    the full ``detail``."""
    assert code in REASONS
    job.status = "failed"
    job.error = code
    job.error_detail = detail[:2000]
    job.finished_at = utcnow()
    session.flush()
    record_event(
        session,
        actor=None,
        action="job.failed",
        target=f"job:{job.id}",
        details={"reason": code, "detail": job.error_detail},
    )
    job_completed(session, job, schedule)


def job_completed(session: Session, job: Job, schedule: ReleaseSchedule) -> None:
    """Set when the job's final state shows to the partner, and write the partner's events for it (same
    transaction as the state change), dated and delivered at that time (``dataspace.jobs.outcomes``)."""
    metrics.job_finished(job.status)
    assert job.finished_at is not None
    job.visible_at = schedule.visible_at(job.created_at, job.finished_at)
    session.flush()
    if job.cancel_requested_at is not None:
        return  # the partner saw it cancelled already
    events.emit(
        session,
        "job.completed",
        {
            "job_id": job.id,
            "contract_id": job.contract_id,
            "status": job.status,
            "reason": job.error if job.status != "succeeded" else None,
        },
        partner_id=job.partner_id,
        now=job.visible_at,
    )
    if job.status == "succeeded":
        events.emit(
            session,
            "decision.ready",
            {"job_id": job.id, "results_url": f"/v1/partner/jobs/{job.id}/results"},
            partner_id=job.partner_id,
            now=job.visible_at,
        )


def withdraw_hidden_events(session: Session, job: Job, now: datetime) -> None:
    """Delete the partner's not-yet-visible events of this job (and their pending deliveries): the partner
    cancelled before the outcome showed, so the outcome never shows."""
    flush_deferred(session)
    hidden = [
        event_id
        for event_id, data in session.execute(
            select(OutboxEvent.id, OutboxEvent.data).where(
                OutboxEvent.partner_id == job.partner_id,
                OutboxEvent.type.in_(("job.completed", "decision.ready")),
                OutboxEvent.occurred_at > now,
            )
        )
        if isinstance(data, dict) and data.get("job_id") == job.id
    ]
    if hidden:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(hidden)))
        session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(hidden)))


class _Heartbeat:
    """Moves ``heartbeat_at`` while the job runs, so recovery can tell a live job from an orphan."""

    def __init__(self, ctx: Context, job_id: int, attempt: int, every: float) -> None:
        self.ctx, self.job_id, self.attempt, self.every = ctx, job_id, attempt, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-{job_id}-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self.ctx.db.transaction() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == self.job_id, Job.status == "running", Job.attempt == self.attempt)
                        .values(heartbeat_at=utcnow())
                        .execution_options(synchronize_session=False)
                    )
            except Exception:  # noqa: BLE001 - a missed beat only makes recovery more eager
                log.warning("job heartbeat failed", extra={"job_id": self.job_id})


def _subjects_of(decisions: pa.Table, mapping: PseudonymMap) -> npt.NDArray[np.int64]:
    """Subject id of each decision's pseudonym (-1 if unknown), without a Python loop per row."""
    column = decisions.column("pseudonym").combine_chunks()
    n = len(column)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    width = mapping.pseudonyms.dtype.itemsize
    lengths = pc.binary_length(column)
    if len(mapping) and pc.min(lengths).as_py() == width == pc.max(lengths).as_py() and column.null_count == 0:
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + n + 1]
        data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        wanted = data.view(f"S{width}")
        pos = np.searchsorted(mapping.pseudonyms, wanted).clip(0, len(mapping) - 1)
        found = mapping.pseudonyms[pos] == wanted
        return np.where(found, mapping.subject_ids[pos], -1).astype(np.int64)
    return mapping.lookup(column.to_pylist())


def score(
    model: ModelSpec,
    emission: Emission,
    schema: DecisionSchema,
    limits: Limits | None,
    timings: dict[str, float] | None = None,
) -> tuple[pa.Table, npt.NDArray[np.int64]]:
    """Run the model on the emitted features in the sandbox; returns the validated decisions and, row by row,
    the subject each decision is for. Used by the single-process runner and by each shard."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    if emission.stats.emitted:
        metrics.sandbox_started()
        try:
            decisions = sandbox_run(model, emission.batches(), schema, limits).decisions
        except (JobFailed, ModelRejected) as exc:
            metrics.sandbox_failed(exc.reason)
            raise
    else:
        decisions = pa.table({"pseudonym": pa.array([], pa.string()), "decision": pa.array([], schema.decision_type)})
    timings["sandbox"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    subject_ids = _subjects_of(decisions, emission.pseudonym_to_subject)
    if subject_ids.size and int(subject_ids.min()) < 0:
        raise JobFailed("output invalid: decisions for pseudonyms not in the input")
    timings["validation"] = time.perf_counter() - t0
    return decisions, subject_ids


def run_job(
    ctx: Context,
    job_id: int,
    *,
    before_store: BeforeStore | None = None,
    limits: Limits | None = None,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    workers: int | None = None,
    credit_inline: bool = True,
) -> RunResult:
    """Run a queued job to its end state. ``before_store`` is called between the sandbox and the storing
    transaction (tests use it to act "while the job runs"). With ``credit_inline=False`` the usage points
    are left pending for ``shards.credit_pending`` (the worker's next pass)."""
    claimed = _claim(ctx, job_id)
    if isinstance(claimed, RunResult):
        return claimed
    timings: dict[str, float] = {}
    try:
        with _Heartbeat(ctx, job_id, claimed.attempt, heartbeat_seconds):
            specs = parse_features(claimed.features)
            t0 = time.perf_counter()
            evaluated_at = utcnow()
            with ctx.db.session() as session:
                eligible = eligible_subjects(
                    session,
                    partner_key=claimed.partner_key,
                    purpose_key=claimed.purpose_key,
                    specs=specs,
                    at=evaluated_at,
                )
                timings["eligibility"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                emission = emit(
                    session,
                    ctx.vault,
                    ctx.keys,
                    partner_key=claimed.partner_key,
                    features=specs,
                    k=claimed.k,
                    eligible_subject_ids=eligible,
                    pseudonym_scope=f"job:{job_id}",
                    workers=workers,
                )
            # The partner's own linked columns, if its contract has them (dataspace.linkage.join).
            emission = linkage_join.attach(ctx.db, ctx.keys, emission, job_id=job_id)
            timings["emission"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            decisions, subject_ids = score(claimed.model, emission, claimed.schema, limits, timings)
            stats = {
                "eligible": int(eligible.size),
                **{k: v for k, v in emission.stats.as_dict().items() if k != "eligible"},
            }
            del emission
        if before_store is not None:
            before_store(ctx, job_id)
        t0 = time.perf_counter()
        result = _store(
            ctx,
            claimed,
            specs=specs,
            decision_column=decisions.column("decision"),
            subject_ids=subject_ids,
            stats=stats,
            timings=timings,
            evaluated_at=evaluated_at,
        )
        timings["storage"] = time.perf_counter() - t0
        if credit_inline:
            t0 = time.perf_counter()
            result.stats["points_credited"] = credit_points(ctx, job_id)
            timings["points"] = time.perf_counter() - t0
        result.timings = timings
        metrics.observe_job_phases(timings)
        return result
    except _Abandoned as exc:
        log.info("job abandoned", extra={"job_id": job_id, "reason": str(exc)})
        with ctx.db.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return RunResult(job_id, job.status, job.error, timings=timings)
    except (JobFailed, ModelRejected) as exc:
        log.info("job failed in the sandbox", extra={"job_id": job_id, "reason": exc.reason, "detail": exc.detail})
        detail = f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason
        return _fail(ctx, claimed, reason_of_sandbox(exc.reason), detail, timings)
    except SandboxUnavailable as exc:
        return _fail(ctx, claimed, "sandbox_unavailable", exc.reason, timings)
    except DataspaceError as exc:
        return _fail(ctx, claimed, "not_runnable", exc.detail, timings)
    except Exception as exc:
        log.exception("job failed", extra={"job_id": job_id})
        return _fail(ctx, claimed, "internal", f"internal error while running the job: {type(exc).__name__}", timings)


def _fail(ctx: Context, claimed: _Claimed, code: str, detail: str, timings: dict[str, float]) -> RunResult:
    with ctx.db.transaction() as session:
        job = session.scalar(select(Job).where(Job.id == claimed.job_id).with_for_update())
        assert job is not None
        if job.status == "running" and job.attempt == claimed.attempt:
            _mark_failed(session, job, code, detail, ReleaseSchedule.of(ctx.settings))
        return RunResult(job.id, job.status, job.error, dict(job.stats), timings)


def decision_rows(
    job_id: int, schema: DecisionSchema, subject_ids: npt.NDArray[np.int64], values: pa.Array
) -> tuple[list[tuple[Any, ...]], npt.NDArray[np.int64], list[str | None]]:
    """``decisions`` rows for these subjects' decision values, plus each row's code into the ledger's
    decision texts (a label, or None for a number: a data-derived value the ledger does not name)."""
    n = len(subject_ids)
    if schema.labels is not None:
        labels = list(schema.labels)
        codes = np.asarray(
            pc.index_in(values, value_set=pa.array(labels, pa.string())).to_numpy(zero_copy_only=False),
            dtype=np.int64,
        )
        rows = list(
            zip([job_id] * n, subject_ids.tolist(), [labels[c] for c in codes.tolist()], [None] * n, strict=True)
        )
        return rows, codes, list(labels)
    numbers = values.to_numpy(zero_copy_only=False).astype(np.float64).tolist()
    rows = list(zip([job_id] * n, subject_ids.tolist(), [None] * n, numbers, strict=True))
    return rows, np.zeros(n, dtype=np.int64), [None]


def feature_fields(specs: Sequence[Any]) -> list[str]:
    """The catalog fields features read (each once, in feature order)."""
    return list(dict.fromkeys(s.field for s in specs))


def contract_fields(contract: Contract) -> list[str]:
    """The catalog fields a contract's features read."""
    return feature_fields(parse_features(contract.features))


def store_decisions(
    session: Session,
    *,
    job_id: int,
    schema: DecisionSchema,
    partner_key: str,
    purpose_key: str,
    specs: list[Any],
    evaluated_at: datetime,
    subject_ids: npt.NDArray[np.int64],
    decision_column: pa.ChunkedArray | pa.Array,
    at: datetime,
    timings: dict[str, float] | None = None,
) -> tuple[npt.NDArray[np.int64], dict[str, int]]:
    """Check consent again at ``at`` (whoever withdrew since ``evaluated_at`` is dropped), then store the
    decisions of the subjects still consenting and one usage-ledger entry per subject (naming every field
    read), in the caller's transaction. Returns the stored subject ids and the storing stats (decisions,
    dropped_withdrawn, ledger_entries). Used by the single-process runner and by each shard."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    keep = still_eligible(
        session,
        partner_key=partner_key,
        purpose_key=purpose_key,
        specs=specs,
        since=evaluated_at,
        at=at,
        subjects=subject_ids,
    )
    timings["recheck"] = time.perf_counter() - t0
    kept_ids = subject_ids[keep]
    order = np.argsort(kept_ids, kind="stable")
    kept_ids = kept_ids[order]
    if isinstance(decision_column, pa.ChunkedArray):
        decision_column = decision_column.combine_chunks()
    values = decision_column.filter(pa.array(keep)).take(pa.array(order))
    rows, codes, texts = decision_rows(job_id, schema, kept_ids, values)
    t0 = time.perf_counter()
    bulk_insert(session, "decisions", ("job_id", "subject_id", "label", "value"), rows)
    del rows
    timings["store_decisions"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ledger = append_job_usage(
        session,
        job_id=job_id,
        partner=partner_key,
        purpose=purpose_key,
        fields=feature_fields(specs),
        subject_ids=kept_ids,
        decision_codes=codes,
        decision_texts=texts,
        at=at,
    )
    timings["store_ledger"] = time.perf_counter() - t0
    stats = {
        "decisions": int(kept_ids.size),
        "dropped_withdrawn": int(subject_ids.size - kept_ids.size),
        "ledger_entries": ledger,
    }
    return kept_ids, stats


def _store(
    ctx: Context,
    claimed: _Claimed,
    *,
    specs: list[Any],
    decision_column: pa.ChunkedArray,
    subject_ids: npt.NDArray[np.int64],
    stats: dict[str, Any],
    timings: dict[str, float],
    evaluated_at: datetime,
) -> RunResult:
    fields = feature_fields(specs)
    with ctx.db.transaction() as session:
        job = session.scalar(select(Job).where(Job.id == claimed.job_id).with_for_update())
        assert job is not None
        if job.status != "running" or job.attempt != claimed.attempt:
            raise _Abandoned(f"job is {job.status} (attempt {job.attempt})")
        now = utcnow()
        contract = session.get(Contract, job.contract_id)
        assert contract is not None
        contracts.require_usable(contract, now)  # revoked or expired while running: store nothing

        # Consent again, now, inside the storing transaction: whoever withdrew meanwhile is dropped.
        kept_ids, stored = store_decisions(
            session,
            job_id=job.id,
            schema=claimed.schema,
            partner_key=claimed.partner_key,
            purpose_key=claimed.purpose_key,
            specs=specs,
            evaluated_at=evaluated_at,
            subject_ids=subject_ids,
            decision_column=decision_column,
            at=now,
            timings=timings,
        )
        stats = {**stats, **stored}
        job.status = "succeeded"
        job.finished_at = now
        job.heartbeat_at = now
        job.stats = stats
        job.error = None
        job.error_detail = None
        job.points_pending = bool(kept_ids.size) and usage_points(session, fields) > 0
        session.flush()
        record_event(
            session,
            actor=None,
            action="job.succeeded",
            target=f"job:{job.id}",
            details={
                "decisions": stats["decisions"],
                "dropped_withdrawn": stats["dropped_withdrawn"],
                "fields": fields,
                "partner_key": claimed.partner_key,
            },
        )
        job_completed(session, job, ReleaseSchedule.of(ctx.settings))
        return RunResult(job.id, "succeeded", None, stats)


def credit_subjects(ctx: Context, job_id: int, fields: list[str], subject_ids: Sequence[int]) -> int:
    """Credit the usage points of a job to these decided subjects, ``POINTS_CHUNK`` per transaction;
    idempotent per (job, subject). Returns how many customers this call credited."""
    credited = 0
    for start in range(0, len(subject_ids), POINTS_CHUNK):
        with ctx.db.transaction() as session:
            per_subject = usage_points(session, fields)
            credited += award_usage(
                session,
                job_id=job_id,
                credits=[(s, per_subject) for s in subject_ids[start : start + POINTS_CHUNK]],
                now=utcnow(),
            )
    return credited


def credit_points(ctx: Context, job_id: int) -> int:
    """Credit usage points to every decided subject of a succeeded job, in bounded transactions.

    Runs right after the decisions are committed; ``award_usage`` is idempotent per (job, subject), so
    running it again after a crash credits nobody twice. Returns how many customers this call credited.
    """
    with ctx.db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != "succeeded" or not job.points_pending:
            return 0
        contract = session.get(Contract, job.contract_id)
        assert contract is not None
        fields = contract_fields(contract)
        ids = session.scalars(
            select(Decision.subject_id).where(Decision.job_id == job_id).order_by(Decision.subject_id)
        ).all()
    credited = credit_subjects(ctx, job_id, fields, ids)
    with ctx.db.transaction() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        assert job is not None
        job.points_pending = False
        job.stats = {**job.stats, "points_credited": int(job.stats.get("points_credited", 0)) + credited}
    return credited


def recover_jobs(
    ctx: Context,
    *,
    stale_after: timedelta = STALE_AFTER,
    max_attempts: int = MAX_ATTEMPTS,
    now: datetime | None = None,
) -> dict[str, list[int]]:
    """Re-queue running jobs whose heartbeat stopped (their server died), or fail them after
    ``max_attempts``. Safe to run at any time: a live job keeps its heartbeat fresh."""
    now = now or utcnow()
    requeued: list[int] = []
    failed: list[int] = []
    with ctx.db.transaction() as session:
        running = session.scalars(
            # A planned (sharded) job is recovered shard by shard: ``shards.recover_shards``.
            select(Job).where(Job.status == "running", Job.shard_count == 0).order_by(Job.id).with_for_update()
        ).all()
        for job in running:
            beat = job.heartbeat_at or job.started_at or job.created_at
            if now - beat < stale_after:
                continue
            if job.attempt >= max_attempts:
                _mark_failed(
                    session,
                    job,
                    "internal",
                    f"the server stopped during the job {job.attempt} times; giving up",
                    ReleaseSchedule.of(ctx.settings),
                )
                failed.append(job.id)
                continue
            job.status = "queued"
            job.attempt += 1
            job.started_at = None
            job.heartbeat_at = None
            job.dispatched_at = None  # broker mode: send the plan message again
            session.flush()
            record_event(
                session,
                actor=None,
                action="job.requeued",
                target=f"job:{job.id}",
                details={"attempt": job.attempt, "reason": "stale heartbeat"},
            )
            requeued.append(job.id)
    return {"requeued": requeued, "failed": failed}


def next_queued(ctx: Context) -> int | None:
    with ctx.db.session() as session:
        return session.scalar(select(Job.id).where(Job.status == "queued").order_by(Job.created_at, Job.id).limit(1))


def run_queued(ctx: Context) -> int:
    """Run queued jobs one at a time until none is left; returns how many ran. Several workers (threads,
    processes, machines) may call this at once: claiming a job is atomic, the loser gets ``Conflict``."""
    ran = 0
    while (job_id := next_queued(ctx)) is not None:
        try:
            run_job(ctx, job_id)
        except Conflict:
            continue  # another worker claimed it first
        ran += 1
    return ran
