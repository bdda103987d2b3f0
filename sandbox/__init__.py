"""Isolated execution of partner models: bubblewrap + seccomp + rlimits, Arrow IPC in, validated decisions out.

Warm sandboxes (`WarmPool`) keep one ONNX model loaded per runner for real-time decisions. Knows nothing
of HTTP or the database. Partner code never runs outside the sandbox: if bubblewrap is
unavailable every operation raises `SandboxUnavailable` (there is no unisolated fallback). Partner code is
never host root: see `sandbox._identity`.
"""

from sandbox._bubblewrap import Bubblewrap
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
from sandbox._errors import JobFailed, ModelRejected, SandboxError, SandboxUnavailable
from sandbox._identity import SANDBOX_USER, ensure_sandbox_user
from sandbox._jobs import DEFAULT_MAX_MODEL_BYTES, inspect_onnx, run_job
from sandbox._pool import Decision, PoolStats, WarmPool

__all__ = [
    "DEFAULT_MAX_MODEL_BYTES",
    "SANDBOX_USER",
    "Bubblewrap",
    "Decision",
    "DecisionSchema",
    "JobFailed",
    "JobOutput",
    "JobStats",
    "Limits",
    "ModelInfo",
    "ModelRejected",
    "ModelSpec",
    "OnnxModel",
    "PoolStats",
    "PythonModule",
    "SandboxError",
    "SandboxUnavailable",
    "TensorInfo",
    "WarmPool",
    "ensure_sandbox_user",
    "inspect_onnx",
    "run_job",
]
