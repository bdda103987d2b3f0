"""One warm sandbox (`Runner`): a runner started by `Bubblewrap.start` in serve mode, fed one request at a time.

Frames (both directions): 4-byte big-endian length + compact JSON; see ``sandbox._runner._serve``. The pool
(``sandbox._pool``) decides when a runner is discarded; `Runner.kill` returns once the whole sandbox is dead.
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

from sandbox._bubblewrap import Bubblewrap
from sandbox._contract import DecisionSchema, Limits
from sandbox._errors import JobFailed
from sandbox._jobs import _REASONS
from sandbox._runner import ERROR_PREFIX, HEADER_STRUCT, MAX_HEADER_BYTES, SERVE_READY

__all__ = ["Decision", "Runner"]

Decision = str | float
_STDERR_KEEP = 16 * 1024
_MAX_ANSWER_BYTES = 64 * 1024


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


class Runner:
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
        """SIGKILL the sandbox and return once every process of it is gone.

        The runner lives in its own session and pid namespace below bubblewrap: killing bubblewrap's group
        kills the namespace's pid 1 through its parent-death signal, and the kernel then kills everything in
        the namespace. That happens a moment later, so wait for those processes (seen in the host's /proc)
        to disappear: a discarded runner is a dead process when this returns."""
        inner = _descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while inner and time.monotonic() < deadline:
            inner = [pid for pid in inner if _running(pid)]
            if inner:
                time.sleep(0.002)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        self._drain.join(timeout=1)
        with contextlib.suppress(OSError):
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _descendants(pid: int) -> list[int]:
    """The processes below `pid` (host view, /proc/PID/task/TID/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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
