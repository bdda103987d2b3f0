"""Launches the runner under bubblewrap with seccomp and rlimits, and talks to it over pipes.

The sandbox sees: the system libraries (/usr/lib*, /lib*, /etc/ld.so.cache) read-only, the Python
installation (at /sandbox/python unless it is the system's) and the site-packages holding
numpy/pyarrow/onnxruntime (at /sandbox/site/N) read-only, the runner script (/sandbox/runner.py), a minimal
/dev (read-only empty /dev/shm) and a size-limited /tmp tmpfs: the only writable place. Nothing else: no
/usr/bin (no shell), no /etc/passwd, no home, no repository, key file or database, and no /proc at all
(so no /proc/sys or other kernel knob, no /proc/self/mountinfo or /proc/1/cmdline naming host paths, no
view of other processes). Namespaces: pid, net (empty), ipc, uts, cgroup, mount; a new session (no
terminal injection); the environment cleared. `Limits` are applied as rlimits by the runner before it
reads the model, the wall clock by this process (SIGKILL of the whole tree).

Who partner code is on the host (never host root, never a capability there) is decided in `sandbox._identity`.
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
from sandbox._identity import KEPT_CAPS, SANDBOX_USER, Identity, sandbox_identity
from sandbox._seccomp import UnsupportedArchitecture, build_filter

__all__ = ["Bubblewrap", "RawRun", "runtime_environment"]

RUNNER_PATH = "/sandbox/runner.py"
SITE_ROOT = "/sandbox/site"
PYTHON_ROOT = "/sandbox/python"
SANDBOX_UID = 65534  # the sandbox's uid inside its user namespace (server not root)
_STDERR_KEEP = 64 * 1024
_STDERR_MAX = 1 << 20
_READ_CHUNK = 1 << 20
_RUNTIME_PACKAGES = ("numpy", "pyarrow", "onnxruntime")
_LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")

_probe_lock = threading.Lock()
_probed: set[tuple[str, str, str, int]] = set()


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


def runtime_environment(threads: int) -> dict[str, str]:
    """The whole environment inside the sandbox (bwrap clears the rest), but for LD_LIBRARY_PATH when the
    interpreter is bound at a neutral path: no PATH, HOME in the private /tmp, and the numeric runtimes'
    thread pools sized to the job's `Limits.threads` (bench/sandbox.py runs its floor with it too)."""
    env = {"PATH": "/nonexistent", "HOME": "/tmp", "LANG": "C.UTF-8"}  # noqa: S108 - the sandbox's own tmpfs
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["ORT_DISABLE_TELEMETRY"] = "1"
    return env


@dataclass(frozen=True)
class Bubblewrap:
    """The bubblewrap launcher. `path` None means ``bwrap`` on PATH; there is no unisolated fallback.

    `user`: the system user partner code runs as when the server is root (see the module docstring).
    """

    path: str | None = None
    python: str | None = None
    user: str = SANDBOX_USER

    def executable(self) -> str:
        found = shutil.which(self.path or "bwrap")
        if found is None:
            raise SandboxUnavailable(
                f"bubblewrap ({self.path or 'bwrap'}) is not installed: refusing to run partner code without isolation"
            )
        return found

    def interpreter(self) -> str:
        return os.path.realpath(self.python or sys.executable)

    def command(
        self,
        limits: Limits,
        seccomp_fd: int,
        program: list[str] | None = None,
        identity: Identity | None = None,
        *,
        probe: bool = False,
    ) -> list[str]:
        """The bwrap argv; `program` replaces the runner's arguments (``python -I -S -B`` + program)."""
        identity = identity or sandbox_identity(self.user)
        python = self.interpreter()
        args = [self.executable()]
        if identity.drop:
            # Root, no user namespace: the runner drops to `identity` first thing (module docstring).
            args += ["--cap-drop", "ALL"]
            for cap in KEPT_CAPS:
                args += ["--cap-add", cap]
        else:
            args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--disable-userns"]
            args += ["--cap-drop", "ALL"]
        args += [
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ]
        for name, value in runtime_environment(limits.threads).items():
            args += ["--setenv", name, value]
        binds: list[tuple[str, str]] = []
        for lib in _LIBRARY_DIRS:
            if os.path.islink(lib):
                args += ["--symlink", os.readlink(lib), lib]
            elif os.path.isdir(lib):
                binds.append((lib, lib))
        if os.path.exists("/etc/ld.so.cache"):
            binds.append(("/etc/ld.so.cache", "/etc/ld.so.cache"))
        prefix = os.path.realpath(sys.base_prefix)
        if prefix in {"/", "/usr"} or not python.startswith(prefix + os.sep):
            # A system Python: bind the interpreter alone (its stdlib is under /usr/lib, bound above).
            binds.append((python, python))
        else:
            # Any other installation is bound at a neutral path, so the sandbox learns no host path
            # (sys.prefix, sys.executable); its own libpython is found through LD_LIBRARY_PATH, since the
            # interpreter's RUNPATH names the host path.
            binds.append((prefix, PYTHON_ROOT))
            args += ["--setenv", "LD_LIBRARY_PATH", f"{PYTHON_ROOT}/lib"]
            python = PYTHON_ROOT + python[len(prefix) :]
        sites = _site_dirs()
        binds += [(site, f"{SITE_ROOT}/{i}") for i, site in enumerate(sites)]
        binds.append((str(Path(__file__).with_name("_runner.py")), RUNNER_PATH))
        # bwrap creates missing parents 0700: when the runner drops to the sandbox user it could not
        # traverse them.
        parents: list[str] = []
        for _, dest in binds:
            for ancestor in reversed(Path(dest).parents[:-1]):
                if str(ancestor) not in parents:
                    parents.append(str(ancestor))
        for directory in parents:
            args += ["--perms", "0755", "--dir", directory]
        for source, dest in binds:
            args += ["--ro-bind", source, dest]
        # No /proc: nothing in it is needed by the runtime, and it holds kernel knobs (/proc/sys,
        # /proc/sysrq-trigger) and host paths (mountinfo's bind sources, pid 1's argv).
        args += ["--dev", "/dev"]
        # bwrap's /dev/shm would be an unbounded tmpfs (half the host's RAM): replace it by an empty,
        # read-only one so /tmp (size-limited) is the only writable place.
        shm = "/dev/shm"  # noqa: S108 - masked inside the sandbox, not used
        args += ["--size", "4096", "--tmpfs", shm, "--remount-ro", shm]
        tmp = "/tmp"  # noqa: S108 - a fresh size-limited tmpfs inside the sandbox, not the host's /tmp
        args += ["--perms", "1777", "--size", str(limits.tmpfs_bytes), "--tmpfs", tmp, "--chdir", tmp]
        args += ["--remount-ro", "/"]
        args += ["--seccomp", str(seccomp_fd)]
        drop = ["--as", f"{identity.uid}:{identity.gid}"] if identity.drop else ["--as", "-"]
        if program is None:
            sites_inside = [f"{SITE_ROOT}/{i}" for i in range(len(sites))]
            program = [RUNNER_PATH, *drop, *(["--probe"] if probe else []), *sites_inside]
        args += [python, "-I", "-S", "-B", *program]
        return args

    def check(self) -> None:
        """Raise `SandboxUnavailable` unless a trivial sandbox actually starts here (cached on success)."""
        key = (self.executable(), self.interpreter(), self.user, os.geteuid())
        with _probe_lock:
            if key in _probed:
                return
            # The runner's own start (the drop of privileges and its checks included), then exit 0.
            raw = self._spawn(lambda stdin: None, Limits(wall_seconds=30), probe=True)
            if raw.returncode != 0:
                tail = raw.stderr_tail.decode("utf-8", "replace").strip()[-300:]
                raise SandboxUnavailable(
                    f"bubblewrap is installed but the sandbox does not start (exit {raw.returncode}): {tail}"
                )
            _probed.add(key)

    def run(self, feed: Callable[[IO[bytes]], None], limits: Limits) -> RawRun:
        self.check()
        return self._spawn(feed, limits)

    def start(self, limits: Limits) -> subprocess.Popen[bytes]:
        """Start the runner under the same isolation as `run` and hand back the process, its three pipes
        open: for a long-lived (warm) runner the caller feeds and reads itself, enforces the wall clock
        per request and kills the whole sandbox (``os.killpg(proc.pid, SIGKILL)``) when done."""
        self.check()
        proc, _ = self._popen(limits)
        return proc

    def _spawn(self, feed: Callable[[IO[bytes]], None], limits: Limits, *, probe: bool = False) -> RawRun:
        proc, started = self._popen(limits, probe=probe)
        return _Session(proc, feed, limits, started).communicate()

    def _popen(self, limits: Limits, *, probe: bool = False) -> tuple[subprocess.Popen[bytes], float]:
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
            identity = sandbox_identity(self.user)
            command = self.command(limits, read_fd, identity=identity, probe=probe)
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
        return proc, started


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
