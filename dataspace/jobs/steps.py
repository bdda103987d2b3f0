"""The steps every shard of a job runs, with no state of their own: the model as the sandbox takes it,
scoring and validating in the sandbox, storing decisions with their usage-ledger entries, crediting points.

The state machine around them (claims, heartbeats, what is stored when) is ``dataspace.jobs.engine``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.orm import Session

from dataspace.agreements.models import Contract, PartnerModel
from dataspace.db import Database, bulk_insert, utcnow
from dataspace.emission import parse_features
from dataspace.emission.service import Emission, PseudonymMap
from dataspace.emission.specs import feature_fields
from dataspace.grants.eligibility import still_eligible
from dataspace.jobs.ledger import append_job_usage
from dataspace.observability import metrics
from dataspace.points.earning import award_usage, usage_points
from sandbox import DecisionSchema, JobFailed, Limits, ModelRejected, ModelSpec, OnnxModel, PythonModule
from sandbox import run_job as sandbox_run

POINTS_CHUNK = 5_000


def model_spec(model: PartnerModel) -> ModelSpec:
    """The uploaded model as the sandbox runs it (Python code runs as approved only once stewards approved it)."""
    if model.kind == "onnx":
        return OnnxModel(bytes(model.data))
    return PythonModule(bytes(model.data).decode("utf-8"), approved=model.status == "approved")


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
    the subject each decision is for."""
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
    dropped_withdrawn, ledger_entries)."""
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


def credit_subjects(db: Database, job_id: int, fields: list[str], subject_ids: Sequence[int]) -> int:
    """Credit the usage points of a job to these decided subjects, ``POINTS_CHUNK`` per transaction;
    idempotent per (job, subject). Returns how many customers this call credited."""
    credited = 0
    for start in range(0, len(subject_ids), POINTS_CHUNK):
        with db.transaction() as session:
            per_subject = usage_points(session, fields)
            credited += award_usage(
                session,
                job_id=job_id,
                credits=[(s, per_subject) for s in subject_ids[start : start + POINTS_CHUNK]],
                now=utcnow(),
            )
    return credited
