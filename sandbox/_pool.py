"""Warm sandboxes: pre-started runners that keep one ONNX model loaded and score one request at a time.

What a caller is promised:

- A `WarmPool` serves ONE model (the caller keeps one pool per partner and model and never hands a pool
  another's requests). Its runners are started by `Bubblewrap.start`: the same launcher, seccomp filter,
  identity drop (never host root), namespaces and rlimits as a batch job; only ONNX models are served warm.
- A runner serves one request at a time: it is checked out of the pool for the request and back in after.
- A runner is discarded (its whole sandbox SIGKILLed, then reaped) and never used again: after
  `max_decisions` answers, on any error or invalid answer, when an answer takes longer than
  `request_seconds` on the parent's clock, and when the pool is closed. A replacement is started in the
  background, so the next request usually finds a warm runner.
- An answer is accepted only if it echoes the request's pseudonym and is a valid decision of the schema;
  a model cannot choose the reason of a failure (`JobFailed` carries the fixed vocabulary of batch jobs).

One runner is a `sandbox._warm.Runner`; frames are described in ``sandbox._runner._serve``.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sandbox._bubblewrap import Bubblewrap
from sandbox._contract import DecisionSchema, Limits, OnnxModel
from sandbox._errors import JobFailed, ModelRejected, SandboxError
from sandbox._runner import HEADER_STRUCT
from sandbox._warm import Decision, Runner

__all__ = ["Decision", "PoolStats", "WarmPool"]


@dataclass(frozen=True)
class PoolStats:
    started: int  # runners started since the pool was made
    retired: int  # runners discarded (recycled after max_decisions, failed, timed out, or closed)
    served: int  # answers returned
    live: int  # runners alive now (idle, busy or starting)


class WarmPool:
    """Up to `size` warm runners of one ONNX model; see the module docstring for the promises."""

    def __init__(
        self,
        model: OnnxModel,
        schema: DecisionSchema,
        feature_names: Sequence[str],
        *,
        limits: Limits | None = None,
        size: int = 2,
        max_decisions: int = 1000,
        request_seconds: float = 1.0,
        start_seconds: float = 30.0,
        bubblewrap: Bubblewrap | None = None,
    ) -> None:
        if not isinstance(model, OnnxModel):
            raise ModelRejected("only ONNX models are served from warm sandboxes")
        if not model.data:
            raise ModelRejected("model is empty")
        if size < 1 or max_decisions < 1 or request_seconds <= 0 or start_seconds <= 0:
            raise ValueError("size, max_decisions, request_seconds and start_seconds must be positive")
        self.schema = schema
        self.feature_names = tuple(feature_names)
        self.limits = limits or Limits()
        self.size = size
        self.max_decisions = max_decisions
        self.request_seconds = request_seconds
        self.start_seconds = start_seconds
        self._launcher = bubblewrap or Bubblewrap()
        self._model = model.data
        header = {
            "kind": "serve",
            "schema": schema.to_json(),
            "feature_names": list(self.feature_names),
            "rlimits": self.limits.rlimits(),
            "threads": self.limits.threads,
            "model_len": len(model.data),
        }
        encoded = json.dumps(header).encode()
        self._frame = struct.pack(HEADER_STRUCT, len(encoded)) + encoded
        self._cond = threading.Condition()
        self._idle: list[Runner] = []
        self._live: set[Runner] = set()
        self._starting = 0
        self._closed = False
        self._started = self._retired = self._served = 0

    # --- lifecycle ----------------------------------------------------------------------------------------
    def warm(self) -> None:
        """Start runners in the background until `size` are alive or starting."""
        while True:
            with self._cond:
                if self._closed or len(self._live) + self._starting >= self.size:
                    return
                self._starting += 1
            threading.Thread(target=self._start_idle, name="warm-sandbox-start", daemon=True).start()

    def close(self) -> None:
        """Kill every idle runner now; busy ones are killed when their request ends. Idempotent."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for runner in idle:
            self._discard(runner)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(self._started, self._retired, self._served, len(self._live) + self._starting)

    def pids(self) -> list[int]:
        """Host pids of the live runners' sandboxes (bubblewrap, the root of each process tree)."""
        with self._cond:
            return sorted(r.pid for r in self._live)

    def _start(self) -> Runner:
        runner = Runner(self._launcher, self.limits, self._frame, self._model, self.start_seconds)
        with self._cond:
            self._started += 1
            self._live.add(runner)
        return runner

    def _start_idle(self) -> None:
        try:
            runner = self._start()
        except SandboxError:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            closed = self._closed
            if not closed:
                self._idle.append(runner)
            self._cond.notify_all()
        if closed:
            self._discard(runner)

    def _discard(self, runner: Runner) -> None:
        runner.kill()
        with self._cond:
            if runner in self._live:
                self._live.discard(runner)
                self._retired += 1
            self._cond.notify_all()

    def _replace(self, runner: Runner) -> None:
        self._discard(runner)
        self.warm()

    # --- requests -----------------------------------------------------------------------------------------
    def _checkout(self) -> Runner:
        deadline = time.monotonic() + self.start_seconds + self.request_seconds
        with self._cond:
            while True:
                if self._closed:
                    raise JobFailed("sandbox runner failed", detail="the pool is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._live) + self._starting < self.size:
                    self._starting += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobFailed("timeout", detail="no warm sandbox became free")
                self._cond.wait(remaining)
        try:
            return self._start()
        finally:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()

    def decide(self, pseudonym: str, values: Sequence[float | None]) -> Decision:
        """The model's decision for one row of features (in `feature_names` order; None for a null).

        Raises `JobFailed` (fixed reasons) when the runner fails, times out or answers wrongly; that runner
        is discarded and a fresh one started in the background."""
        if len(values) != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {len(values)}")
        runner = self._checkout()
        try:
            decision = runner.request(pseudonym, values, self.schema, self.request_seconds)
        except BaseException:
            self._replace(runner)
            raise
        with self._cond:
            self._served += 1
            keep = not self._closed and runner.served < self.max_decisions
            if keep:
                self._idle.append(runner)
                self._cond.notify()
        if not keep:
            self._replace(runner)
        return decision
