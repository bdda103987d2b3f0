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

Frames (both directions): 4-byte big-endian length + compact JSON; see ``sandbox._runner._serve``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import select
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sandbox._bubblewrap import Bubblewrap
from sandbox._contract import DecisionSchema, Limits, OnnxModel
from sandbox._errors import JobFailed, ModelRejected, SandboxError
from sandbox._jobs import _REASONS
from sandbox._runner import ERROR_PREFIX, HEADER_STRUCT, MAX_HEADER_BYTES, SERVE_READY

__all__ = ["Decision", "PoolStats", "WarmPool"]

Decision = str | float
_STDERR_KEEP = 16 * 1024
_MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class PoolStats:
    started: int  # runners started since the pool was made
    retired: int  # runners discarded (recycled after max_decisions, failed, timed out, or closed)
    served: int  # answers returned
    live: int  # runners alive now (idle, busy or starting)


class _Spawner:
    """The one long-lived thread that starts every warm runner of this process.

    bubblewrap's ``--die-with-parent`` is PR_SET_PDEATHSIG, which fires when the *thread* that forked the
    sandbox exits, not the process: a runner started from a request's worker thread (which a thread pool
    retires when idle) or from a short-lived thread would be killed with it. Starting them all here keeps
    the guarantee that runners die with the server, and only then.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self, launch: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        future: Future[subprocess.Popen[bytes]] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="warm-sandbox-spawner", daemon=True)
                self._thread.start()
        self._queue.put((launch, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            launch, future = self._queue.get()
            try:
                future.set_result(launch())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)


_SPAWNER = _Spawner()


class _Dead(Exception):
    """The runner closed its stdout (exited or was killed)."""


class _Runner:
    """One warm sandbox. Not thread-safe: the pool hands it to one request at a time."""

    def __init__(self, launcher: Bubblewrap, limits: Limits, frame: bytes, model: bytes, start_seconds: float) -> None:
        self.proc: subprocess.Popen[bytes] = _SPAWNER.start(lambda: launcher.start(limits))
        self.pid = self.proc.pid  # bubblewrap's pid on the host: the root of the sandbox's process tree
        self.served = 0
        self._buffer = bytearray()
        self._stderr = bytearray()
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._poll = select.poll()
        self._poll.register(self._out, select.POLLIN)
        self._drain = threading.Thread(target=self._drain_stderr, name="warm-sandbox-stderr", daemon=True)
        self._drain.start()
        # The model may be larger than a pipe's buffer: fed from a thread, so a runner that never reads it
        # cannot block us past the start deadline (the kill breaks the feeder's pipe).
        feeder = threading.Thread(target=self._feed, args=(frame + model,), name="warm-sandbox-feed", daemon=True)
        feeder.start()
        try:
            if self._read_frame(time.monotonic() + start_seconds) != SERVE_READY:
                raise JobFailed("sandbox protocol error", detail="the runner did not answer READY")
        except BaseException as exc:
            self.kill()
            if isinstance(exc, _Dead):
                raise self._failure("the runner exited while starting") from None
            if isinstance(exc, TimeoutError):
                raise JobFailed("timeout", detail=f"the runner did not start within {start_seconds:g} s") from None
            raise
        finally:
            feeder.join(timeout=1)

    def _feed(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a runner that died or was killed: judged by the reader
            view = memoryview(data)
            while view:
                view = view[os.write(self._in, view) :]

    def _drain_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(stream.fileno(), 65536):
                self._stderr = (self._stderr + chunk)[-_STDERR_KEEP:]

    def _read_frame(self, deadline: float) -> bytes:
        while True:
            if len(self._buffer) >= 4:
                (length,) = struct.unpack(HEADER_STRUCT, self._buffer[:4])
                if length > _MAX_ANSWER_BYTES:
                    raise JobFailed("output too large", detail=f"answer frame of {length} bytes")
                if len(self._buffer) >= 4 + length:
                    payload = bytes(self._buffer[4 : 4 + length])
                    del self._buffer[: 4 + length]
                    return payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not self._poll.poll(max(1, math.ceil(remaining * 1000))):
                continue
            chunk = os.read(self._out, 65536)
            if not chunk:
                raise _Dead
            self._buffer += chunk

    def _failure(self, fallback: str) -> JobFailed:
        """The runner's own error code (its last ``SANDBOX-ERROR`` line), mapped to the fixed vocabulary."""
        self._drain.join(timeout=1)
        for line in reversed(bytes(self._stderr).decode("utf-8", "replace").splitlines()):
            if line.startswith(ERROR_PREFIX):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    payload = json.loads(line[len(ERROR_PREFIX) :])
                    code = str(payload["code"])
                    if code in _REASONS:
                        return JobFailed(_REASONS[code], detail=str(payload.get("detail", ""))[:500])
                break
        return JobFailed("sandbox runner failed", detail=fallback)

    def request(
        self, pseudonym: str, values: Sequence[float | None], schema: DecisionSchema, seconds: float
    ) -> Decision:
        payload = json.dumps({"p": pseudonym, "x": list(values)}, separators=(",", ":")).encode()
        if len(payload) > MAX_HEADER_BYTES:
            raise ValueError("request frame too large")
        deadline = time.monotonic() + seconds
        try:
            self._feed_now(struct.pack(HEADER_STRUCT, len(payload)) + payload)
            answer = self._read_frame(deadline)
        except TimeoutError:
            raise JobFailed("timeout", detail=f"no answer within {seconds:g} s") from None
        except (_Dead, BrokenPipeError):
            self.kill()
            raise self._failure("the runner exited while scoring") from None
        try:
            decoded = json.loads(answer)
            echoed, decision = decoded["p"], decoded["d"]
        except (ValueError, KeyError, TypeError):
            raise JobFailed("sandbox protocol error", detail="unreadable answer") from None
        if echoed != pseudonym:
            raise JobFailed("sandbox protocol error", detail="the answer is for another request")
        self.served += 1
        return _valid(decision, schema)

    def _feed_now(self, frame: bytes) -> None:
        # A request frame is far below a pipe's buffer and the runner has read everything before answering.
        view = memoryview(frame)
        while view:
            view = view[os.write(self._in, view) :]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        self._drain.join(timeout=1)
        with contextlib.suppress(OSError):
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _valid(decision: object, schema: DecisionSchema) -> Decision:
    if schema.labels is not None:
        if isinstance(decision, str) and decision in schema.labels:
            return decision
        raise JobFailed(_REASONS["output_shape"], detail="label outside the schema")
    assert schema.minimum is not None
    assert schema.maximum is not None
    if isinstance(decision, bool) or not isinstance(decision, int | float):
        raise JobFailed(_REASONS["output_shape"], detail="a number decision is not a number")
    value = float(decision)
    if not (math.isfinite(value) and schema.minimum <= value <= schema.maximum):
        raise JobFailed(_REASONS["output_shape"], detail="number outside the schema's range")
    return value


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
        self._idle: list[_Runner] = []
        self._live: set[_Runner] = set()
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

    def _start(self) -> _Runner:
        runner = _Runner(self._launcher, self.limits, self._frame, self._model, self.start_seconds)
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

    def _discard(self, runner: _Runner) -> None:
        runner.kill()
        with self._cond:
            if runner in self._live:
                self._live.discard(runner)
                self._retired += 1
            self._cond.notify_all()

    def _replace(self, runner: _Runner) -> None:
        self._discard(runner)
        self.warm()

    # --- requests -----------------------------------------------------------------------------------------
    def _checkout(self) -> _Runner:
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
