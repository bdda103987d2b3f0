"""Launches the runner under bubblewrap with seccomp and rlimits, and talks to it over pipes.

The sandbox sees: the system libraries (/usr/lib*, /lib*, /etc/ld.so.cache) read-only, the Python
installation and the site-packages holding numpy/pyarrow/onnxruntime read-only, the runner script, a
fresh /proc of its own pid namespace, a minimal /dev (read-only empty /dev/shm) and a size-limited /tmp
tmpfs: the only writable place. Nothing else: no
/usr/bin (no shell), no /etc/passwd, no home, no repository, key file or database. Namespaces: user
(uid/gid 65534, further user namespaces disabled), pid, net (empty), ipc, uts, cgroup; all capabilities
dropped; a new session (no terminal injection); the environment cleared. `Limits` are applied as rlimits
by the runner before it reads the model, the wall clock by this process (SIGKILL of the whole tree).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sandbox._contract import Limits
from sandbox._errors import SandboxUnavailable
from sandbox._seccomp import UnsupportedArchitecture, build_filter

__all__ = ["Bubblewrap", "RawRun"]

RUNNER_PATH = "/sandbox/runner.py"
SITE_ROOT = "/sandbox/site"
SANDBOX_UID = 65534
_STDERR_KEEP = 64 * 1024
_STDERR_MAX = 1 << 20
_READ_CHUNK = 1 << 20
_RUNTIME_PACKAGES = ("numpy", "pyarrow", "onnxruntime")
_LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")

_probe_lock = threading.Lock()
_probed: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class RawRun:
    """What came back from one sandboxed run, before interpretation."""

    returncode: int
    stdout: bytes
    stderr_tail: bytes
    timed_out: bool
    output_too_large: bool
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    feed_error: BaseException | None


def _site_dirs() -> list[str]:
    dirs: list[str] = []
    for name in _RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SandboxUnavailable(f"the sandbox runtime needs the {name!r} package")
        parent = str(Path(next(iter(spec.submodule_search_locations))).resolve().parent)
        if parent not in dirs:
            dirs.append(parent)
    return dirs


@dataclass(frozen=True)
class Bubblewrap:
    """The bubblewrap launcher. `path` None means ``bwrap`` on PATH; there is no unisolated fallback."""

    path: str | None = None
    python: str | None = None

    def executable(self) -> str:
        found = shutil.which(self.path or "bwrap")
        if found is None:
            raise SandboxUnavailable(
                f"bubblewrap ({self.path or 'bwrap'}) is not installed: refusing to run partner code without isolation"
            )
        return found

    def interpreter(self) -> str:
        return os.path.realpath(self.python or sys.executable)

    def command(self, limits: Limits, seccomp_fd: int, program: list[str] | None = None) -> list[str]:
        """The bwrap argv; `program` replaces the runner's arguments (``python -I -S -B`` + program)."""
        python = self.interpreter()
        args = [
            self.executable(),
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--disable-userns",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--setenv",
            "PATH",
            "/nonexistent",
            "--setenv",
            "HOME",
            "/tmp",  # noqa: S108 - the sandbox's own private tmpfs
            "--setenv",
            "LANG",
            "C.UTF-8",
        ]
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            args += ["--setenv", var, str(limits.threads)]
        args += ["--setenv", "ORT_DISABLE_TELEMETRY", "1"]
        for lib in _LIBRARY_DIRS:
            if os.path.islink(lib):
                args += ["--symlink", os.readlink(lib), lib]
            elif os.path.isdir(lib):
                args += ["--ro-bind", lib, lib]
        if os.path.exists("/etc/ld.so.cache"):
            args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        prefix = os.path.realpath(sys.base_prefix)
        if prefix in {"/", "/usr"} or not python.startswith(prefix + os.sep):
            # A system Python: bind the interpreter alone (its stdlib is under /usr/lib, bound above).
            args += ["--ro-bind", python, python]
        else:
            args += ["--ro-bind", prefix, prefix]
        sites = _site_dirs()
        for i, site in enumerate(sites):
            args += ["--ro-bind", site, f"{SITE_ROOT}/{i}"]
        args += ["--ro-bind", str(Path(__file__).with_name("_runner.py")), RUNNER_PATH]
        args += ["--proc", "/proc", "--dev", "/dev"]
        # bwrap's /dev/shm would be an unbounded tmpfs (half the host's RAM): replace it by an empty,
        # read-only one so /tmp (size-limited) is the only writable place.
        shm = "/dev/shm"  # noqa: S108 - masked inside the sandbox, not used
        args += ["--size", "4096", "--tmpfs", shm, "--remount-ro", shm]
        tmp = "/tmp"  # noqa: S108 - a fresh size-limited tmpfs inside the sandbox, not the host's /tmp
        args += ["--size", str(limits.tmpfs_bytes), "--tmpfs", tmp, "--chdir", tmp]
        args += ["--remount-ro", "/"]
        args += ["--seccomp", str(seccomp_fd)]
        if program is None:
            program = [RUNNER_PATH, *(f"{SITE_ROOT}/{i}" for i in range(len(sites)))]
        args += [python, "-I", "-S", "-B", *program]
        return args

    def check(self) -> None:
        """Raise `SandboxUnavailable` unless a trivial sandbox actually starts here (cached on success)."""
        key = (self.executable(), self.interpreter())
        with _probe_lock:
            if key in _probed:
                return
            raw = self._spawn(lambda stdin: None, Limits(wall_seconds=30), argv_tail=["-c", "import sys; sys.exit(0)"])
            if raw.returncode != 0:
                tail = raw.stderr_tail.decode("utf-8", "replace").strip()[-300:]
                raise SandboxUnavailable(
                    f"bubblewrap is installed but the sandbox does not start (exit {raw.returncode}): {tail}"
                )
            _probed.add(key)

    def run(self, feed: Callable[[IO[bytes]], None], limits: Limits) -> RawRun:
        self.check()
        return self._spawn(feed, limits)

    def _spawn(self, feed: Callable[[IO[bytes]], None], limits: Limits, argv_tail: list[str] | None = None) -> RawRun:
        try:
            program = build_filter()
        except UnsupportedArchitecture as exc:
            raise SandboxUnavailable(str(exc)) from exc
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, program)  # a few hundred bytes: fits the pipe buffer
        finally:
            os.close(write_fd)
        try:
            command = self.command(limits, read_fd, argv_tail)
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(read_fd,),
                    start_new_session=True,
                    env={},
                )
            except OSError as exc:
                raise SandboxUnavailable(f"bubblewrap could not be started: {exc}") from exc
        finally:
            os.close(read_fd)
        return _Session(proc, feed, limits, started).communicate()


class _Session:
    """Feeds stdin from a thread while reading stdout/stderr under the wall clock and size bounds."""

    def __init__(
        self, proc: subprocess.Popen[bytes], feed: Callable[[IO[bytes]], None], limits: Limits, started: float
    ) -> None:
        self.proc = proc
        self.feed = feed
        self.limits = limits
        self.started = started
        self.deadline = started + limits.wall_seconds
        self.feed_error: BaseException | None = None

    def _feed(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            self.feed(stdin)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sandbox stopped reading (finished early, failed or was killed): judged by its exit
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            self.feed_error = exc
            self._kill()
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def communicate(self) -> RawRun:
        proc = self.proc
        assert proc.stdout is not None
        assert proc.stderr is not None
        feeder = threading.Thread(target=self._feed, name="sandbox-feed", daemon=True)
        feeder.start()
        stdout = bytearray()
        stderr_tail = bytearray()
        stderr_total = 0
        timed_out = too_large = False
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, "out")
            selector.register(proc.stderr, selectors.EVENT_READ, "err")
            while selector.get_map():
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in selector.select(timeout=min(remaining, 0.5)):
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.data == "out":
                        stdout += chunk
                        if len(stdout) > self.limits.max_output_bytes:
                            too_large = True
                    else:
                        stderr_total += len(chunk)
                        stderr_tail = (stderr_tail + chunk)[-_STDERR_KEEP:]
                        if stderr_total > _STDERR_MAX:
                            too_large = True
                if too_large:
                    break
        if timed_out or too_large:
            self._kill()
        status, usage = self._wait()
        if status is None:
            timed_out = True
            self._kill()
            status, usage = self._wait(block=True)
        feeder.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
        returncode = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
        proc.returncode = returncode
        cpu = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
        rss = usage.ru_maxrss * 1024 if usage is not None else 0
        return RawRun(
            returncode=returncode,
            stdout=bytes(stdout),
            stderr_tail=bytes(stderr_tail),
            timed_out=timed_out,
            output_too_large=too_large,
            wall_seconds=time.monotonic() - self.started,
            cpu_seconds=cpu,
            peak_rss_bytes=rss,
            feed_error=self.feed_error,
        )

    def _wait(self, *, block: bool = False) -> tuple[int | None, resource.struct_rusage | None]:
        """Reap bwrap (its rusage includes the sandbox it waited for); None if still alive at the deadline."""
        while True:
            pid, status, usage = os.wait4(self.proc.pid, 0 if block else os.WNOHANG)
            if pid:
                return status, usage
            if time.monotonic() >= self.deadline:
                return None, None
            time.sleep(0.005)
