"""The sandbox's input and output contracts: models, decision schemas, limits, results.

ONNX convention (checked by `inspect_onnx`, relied on by the runner):

- exactly one input, named ``features``, ``tensor(float)`` of shape ``[N, F]`` where F is the number of
  feature columns in the contract's order (the batch dimension may be symbolic); nulls arrive as NaN;
  ONNX models take numeric features only;
- an output named ``label`` or ``score`` (others are ignored):
  - ``label``: int64 indexes into the schema's labels, or strings (must be schema labels);
  - ``score`` with a label schema: ``[N, K]`` with K = number of labels -> argmax; ``[N]``/``[N, 1]``
    with exactly two labels -> ``labels[1]`` when score >= 0.5 else ``labels[0]``;
  - ``score`` with a number-range schema: ``[N]``/``[N, 1]``, the decision itself.

Approved Python modules define ``score(table: pyarrow.Table) -> Sequence`` returning one decision per row
of each batch (the table has the ``pseudonym`` column and the features); they run in the same sandbox.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyarrow as pa

__all__ = [
    "DecisionSchema",
    "JobOutput",
    "JobStats",
    "Limits",
    "ModelInfo",
    "ModelSpec",
    "OnnxModel",
    "PythonModule",
    "TensorInfo",
]

MiB = 1 << 20


@dataclass(frozen=True)
class DecisionSchema:
    """What a decision may be: one of `labels`, or a number in ``[minimum, maximum]``."""

    labels: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            if self.minimum is not None or self.maximum is not None:
                raise ValueError("a decision schema has either labels or a number range, not both")
            if not self.labels:
                raise ValueError("a label schema needs at least one label")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels must be unique")
            object.__setattr__(self, "labels", tuple(self.labels))
        else:
            if self.minimum is None or self.maximum is None:
                raise ValueError("a number schema needs both minimum and maximum")
            if not (math.isfinite(self.minimum) and math.isfinite(self.maximum)):
                raise ValueError("the number range must be finite")
            if self.minimum > self.maximum:
                raise ValueError("minimum must not exceed maximum")

    @classmethod
    def of_labels(cls, *labels: str) -> DecisionSchema:
        return cls(labels=tuple(labels))

    @classmethod
    def number_range(cls, minimum: float, maximum: float) -> DecisionSchema:
        return cls(minimum=float(minimum), maximum=float(maximum))

    @property
    def decision_type(self) -> pa.DataType:
        return pa.string() if self.labels is not None else pa.float64()

    def to_json(self) -> dict[str, object]:
        if self.labels is not None:
            return {"labels": list(self.labels)}
        return {"minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    cpu_seconds: int = 60
    memory_bytes: int = 2048 * MiB  # RLIMIT_AS: the runtime alone maps ~400 MiB
    max_processes: int = 64  # RLIMIT_NPROC (threads count too; not applied for a root server, see _identity)
    max_file_bytes: int = 16 * MiB  # RLIMIT_FSIZE, for the /tmp tmpfs
    wall_seconds: float = 120.0
    max_output_bytes: int = 256 * MiB  # decisions stream on stdout
    tmpfs_bytes: int = 64 * MiB
    max_open_files: int = 64
    threads: int = 1  # onnxruntime intra-op threads

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "max_processes", "max_file_bytes", "max_output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.wall_seconds <= 0 or self.tmpfs_bytes <= 0 or self.threads <= 0:
            raise ValueError("wall_seconds, tmpfs_bytes and threads must be positive")
        if self.max_open_files < 16:
            raise ValueError("max_open_files must be at least 16 (the runtime needs a few)")

    def rlimits(self) -> dict[str, int]:
        return {
            "cpu": self.cpu_seconds,
            "as": self.memory_bytes,
            "nproc": self.max_processes,
            "fsize": self.max_file_bytes,
            "nofile": self.max_open_files,
            "core": 0,
        }


@dataclass(frozen=True, repr=False)
class OnnxModel:
    """An ONNX model as uploaded (bytes, never written to disk by the sandbox)."""

    data: bytes

    def __repr__(self) -> str:
        return f"OnnxModel(<{len(self.data)} bytes>)"


@dataclass(frozen=True, repr=False)
class PythonModule:
    """A partner's Python scoring module; runs only if a steward approved it (`approved=True`)."""

    source: str
    approved: bool = False

    def __repr__(self) -> str:
        return f"PythonModule(<{len(self.source)} chars>, approved={self.approved})"


ModelSpec = OnnxModel | PythonModule


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ModelInfo:
    """The accepted signature of an ONNX model."""

    sha256: str
    size_bytes: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    feature_count: int
    output_name: str  # "label" or "score"


@dataclass(frozen=True)
class JobStats:
    rows: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    output_bytes: int


@dataclass(frozen=True)
class JobOutput:
    """Validated decisions: a table (pseudonym: string, decision: string | float64), one row per input."""

    decisions: pa.Table
    stats: JobStats = field(compare=False)
