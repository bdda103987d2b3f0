"""The sandbox's two operations: inspect an uploaded ONNX model, and run a scoring job."""

from __future__ import annotations

import hashlib
import json
import signal
import struct
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from sandbox._bubblewrap import Bubblewrap, RawRun
from sandbox._contract import (
    DecisionSchema,
    JobOutput,
    JobStats,
    Limits,
    ModelInfo,
    ModelSpec,
    OnnxModel,
    PythonModule,
    TensorInfo,
)
from sandbox._errors import JobFailed, ModelRejected
from sandbox._runner import ERROR_PREFIX, HEADER_STRUCT, STATS_PREFIX
from sandbox._validate import validate_decisions

__all__ = ["DEFAULT_MAX_MODEL_BYTES", "inspect_onnx", "run_job"]

DEFAULT_MAX_MODEL_BYTES = 64 << 20
BATCH_ROWS = 65536
INSPECT_LIMITS = Limits(cpu_seconds=30, wall_seconds=30.0, max_output_bytes=1 << 20)

Features: TypeAlias = pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]

# Runner error codes -> the reason shown to callers (fixed text: the model cannot choose it).
_REASONS = {
    "memory": "killed: memory limit",
    "bad_model": "model could not be loaded",
    "input_mismatch": "model input signature does not match the contract",
    "output_shape": "model output does not match the decision schema",
    "model_error": "model failed while scoring",
    "no_score_function": "python module defines no score(table) function",
    "protocol": "sandbox protocol error",
    "internal": "sandbox runner failed",
}


def _frame(header: dict[str, Any], model: bytes) -> bytes:
    encoded = json.dumps({**header, "model_len": len(model)}).encode()
    return struct.pack(HEADER_STRUCT, len(encoded)) + encoded


def _runner_error(raw: RawRun) -> tuple[str, str] | None:
    """The runner's structured error (last ``SANDBOX-ERROR`` line of stderr), if it wrote one."""
    for line in reversed(raw.stderr_tail.decode("utf-8", "replace").splitlines()):
        if line.startswith(ERROR_PREFIX):
            try:
                payload = json.loads(line[len(ERROR_PREFIX) :])
                code, detail = str(payload["code"]), str(payload.get("detail", ""))
            except (ValueError, KeyError, TypeError):
                return None
            return (code, detail[:500]) if code in _REASONS else None
    return None


def _runner_stats(raw: RawRun) -> tuple[float, int]:
    """CPU seconds and peak RSS as the runner measured them (bwrap's pid-1 hides them from wait4)."""
    for line in reversed(raw.stderr_tail.decode("utf-8", "replace").splitlines()):
        if line.startswith(STATS_PREFIX):
            try:
                payload = json.loads(line[len(STATS_PREFIX) :])
                return float(payload["cpu_seconds"]), int(payload["peak_rss_bytes"])
            except (ValueError, KeyError, TypeError):
                break
    return raw.cpu_seconds, raw.peak_rss_bytes


def _raise_for_failure(raw: RawRun, limits: Limits) -> None:
    if raw.timed_out:
        raise JobFailed("timeout", detail=f"wall clock limit of {limits.wall_seconds:g} s")
    if raw.output_too_large:
        raise JobFailed("output too large", detail=f"limit {limits.max_output_bytes} bytes")
    if raw.returncode == 0:
        return
    error = _runner_error(raw)
    if error is not None:
        raise JobFailed(_REASONS[error[0]], detail=error[1])
    # bwrap reports a child killed by signal N as exit status 128 + N.
    sig = raw.returncode - 128 if raw.returncode > 128 else -raw.returncode
    if sig == signal.SIGXCPU:
        raise JobFailed("killed: cpu limit", detail=f"limit {limits.cpu_seconds} s of CPU")
    if sig == signal.SIGKILL:
        # We did not send it (no timeout): the CPU hard limit (soft + 1 s, if SIGXCPU was ignored) or
        # the kernel's OOM killer.
        raise JobFailed("killed: cpu or memory limit")
    if sig > 0:
        name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
        raise JobFailed(f"killed by signal {name}")
    raise JobFailed(f"sandbox exited with status {raw.returncode}")


def _check_signature(signature: dict[str, Any], feature_count: int, schema: DecisionSchema | None) -> str:
    inputs = signature.get("inputs", [])
    outputs = {o["name"]: o for o in signature.get("outputs", [])}
    names = [i["name"] for i in inputs]
    if names != ["features"]:
        raise ModelRejected(f"model must have exactly one input named 'features', it has {names!r:.200}")
    (feature_input,) = inputs
    if feature_input["type"] != "tensor(float)":
        raise ModelRejected(f"input 'features' must be tensor(float), it is {feature_input['type']!r:.50}")
    shape = feature_input["shape"]
    if len(shape) != 2:
        raise ModelRejected(f"input 'features' must have shape [N, {feature_count}], it has rank {len(shape)}")
    if shape[1] is not None and shape[1] != feature_count:
        raise ModelRejected(f"input 'features' takes {shape[1]} features, the contract has {feature_count}")
    numeric = schema is not None and schema.labels is None
    if "label" in outputs and not numeric:
        if outputs["label"]["type"] not in {"tensor(int64)", "tensor(int32)", "tensor(string)"}:
            raise ModelRejected("output 'label' must be tensor(int64) or tensor(string)")
        return "label"
    if "score" in outputs:
        if outputs["score"]["type"] not in {"tensor(float)", "tensor(double)"}:
            raise ModelRejected("output 'score' must be tensor(float) or tensor(double)")
        score_shape = outputs["score"]["shape"]
        if schema is not None and schema.labels is not None and len(score_shape) == 2:
            width = score_shape[1]
            allowed = {len(schema.labels), 1} if len(schema.labels) == 2 else {len(schema.labels)}
            if width is not None and width not in allowed:
                raise ModelRejected(f"output 'score' has {width} columns for {len(schema.labels)} labels")
        return "score"
    wanted = "'score'" if numeric else "'label' or 'score'"
    raise ModelRejected(f"model must have an output named {wanted}")


def inspect_onnx(
    model_bytes: bytes,
    *,
    feature_names: Iterable[str],
    schema: DecisionSchema | None = None,
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    bubblewrap: Bubblewrap | None = None,
) -> ModelInfo:
    """Check an uploaded ONNX model against the contract; the model is parsed inside the sandbox only."""
    features = list(feature_names)
    if not model_bytes:
        raise ModelRejected("model is empty")
    if len(model_bytes) > max_bytes:
        raise ModelRejected(f"model is {len(model_bytes)} bytes, the limit is {max_bytes}")
    frame = _frame({"kind": "inspect", "rlimits": INSPECT_LIMITS.rlimits()}, model_bytes)

    def feed(stdin: IO[bytes]) -> None:
        stdin.write(frame)
        stdin.write(model_bytes)

    raw = (bubblewrap or Bubblewrap()).run(feed, INSPECT_LIMITS)
    try:
        _raise_for_failure(raw, INSPECT_LIMITS)
        signature = json.loads(raw.stdout)
    except JobFailed as exc:
        reason = "not a valid ONNX model" if exc.reason == _REASONS["bad_model"] else exc.reason
        raise ModelRejected(f"model rejected: {reason}", detail=exc.detail) from exc
    except ValueError as exc:
        raise ModelRejected("model rejected: inspection returned garbage") from exc
    output_name = _check_signature(signature, len(features), schema)

    def tensors(key: str) -> tuple[TensorInfo, ...]:
        return tuple(TensorInfo(t["name"], t["type"], tuple(t["shape"])) for t in signature[key])

    return ModelInfo(
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        size_bytes=len(model_bytes),
        inputs=tensors("inputs"),
        outputs=tensors("outputs"),
        feature_count=len(features),
        output_name=output_name,
    )


def _record_batches(features: Features) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(features, pa.Table | pa.RecordBatch):
        table = features if isinstance(features, pa.Table) else pa.Table.from_batches([features])
        if "pseudonym" in table.column_names:
            column = table.column("pseudonym")
            if len(column) and pc.count_distinct(column).as_py() != len(column):
                raise ValueError("features contain duplicate pseudonyms")
        return table.schema, iter(table.to_batches(max_chunksize=BATCH_ROWS))
    iterator: Iterator[pa.RecordBatch] = iter(features)
    first = next(iterator, None)
    if first is None:
        raise ValueError("features are empty: pass an empty Table to run a job on zero rows")

    def chain() -> Iterator[pa.RecordBatch]:
        yield first
        yield from iterator

    return first.schema, chain()


def _check_features(schema: pa.Schema, model: ModelSpec) -> list[str]:
    if "pseudonym" not in schema.names:
        raise ValueError("features need a 'pseudonym' column")
    ptype = schema.field("pseudonym").type
    if not (pa.types.is_string(ptype) or pa.types.is_large_string(ptype)):
        raise ValueError("the 'pseudonym' column must be a string column")
    names = [n for n in schema.names if n != "pseudonym"]
    if isinstance(model, OnnxModel):
        for name in names:
            t = schema.field(name).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise ModelRejected(f"ONNX models take numeric features only; feature {name!r} is {t}")
    return names


def run_job(
    model: ModelSpec,
    features: Features,
    schema: DecisionSchema,
    limits: Limits | None = None,
    *,
    bubblewrap: Bubblewrap | None = None,
) -> JobOutput:
    """Score `features` with `model` inside the sandbox; validated decisions, or `JobFailed` with a reason.

    `features`: a ``pseudonym`` string column plus the feature columns in contract order (a Table, a
    RecordBatch, or an iterable of RecordBatches streamed through without being collected).
    """
    limits = limits or Limits()
    launcher = bubblewrap or Bubblewrap()
    launcher.check()  # refuse before touching any data if isolation is unavailable
    if isinstance(model, PythonModule):
        if not model.approved:
            raise ModelRejected("python module is not approved by a steward")
        kind, payload = "python", model.source.encode()
    else:
        kind, payload = "onnx", model.data
    if not payload:
        raise ModelRejected("model is empty")
    in_schema, batches = _record_batches(features)
    feature_names = _check_features(in_schema, model)
    header = {
        "kind": kind,
        "schema": schema.to_json(),
        "feature_names": feature_names,
        "rlimits": limits.rlimits(),
        "threads": limits.threads,
    }
    frame = _frame(header, payload)
    pseudonyms: list[pa.Array] = []

    def feed(stdin: IO[bytes]) -> None:
        stdin.write(frame)
        stdin.write(payload)
        with ipc.new_stream(stdin, in_schema) as writer:
            for batch in batches:
                for offset in range(0, max(batch.num_rows, 1), BATCH_ROWS):
                    chunk = batch.slice(offset, BATCH_ROWS)
                    pseudonyms.append(chunk.column("pseudonym").cast(pa.string()))
                    writer.write_batch(chunk)

    raw = launcher.run(feed, limits)
    if raw.feed_error is not None:
        raise raw.feed_error
    _raise_for_failure(raw, limits)
    expected = pa.chunked_array(pseudonyms, type=pa.string())
    if len(expected) and pc.count_distinct(expected).as_py() != len(expected):
        raise ValueError("features contain duplicate pseudonyms")
    decisions = validate_decisions(raw.stdout, expected, schema)
    cpu_seconds, peak_rss = _runner_stats(raw)
    stats = JobStats(
        rows=len(expected),
        wall_seconds=raw.wall_seconds,
        cpu_seconds=cpu_seconds,
        peak_rss_bytes=peak_rss,
        output_bytes=len(raw.stdout),
    )
    return JobOutput(decisions=decisions, stats=stats)
