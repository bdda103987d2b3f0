"""Hostile partner code against the sandbox: every attempt must fail or be killed, the host stays healthy.

Probe-style modules try an attack and report what they saw as the decision ("blocked" or "escaped"), so a
test proves the attack itself failed rather than the job failing for an unrelated reason. Bomb-style
modules must be killed with the specific reason.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from sandbox import DecisionSchema, JobFailed, Limits, OnnxModel, PythonModule, run_job
from tests.unit.sandbox import onnx_factory

pytestmark = pytest.mark.escape

OUTCOME = DecisionSchema.of_labels("blocked", "escaped")
LIMITS = Limits(cpu_seconds=10, wall_seconds=30, memory_bytes=1024 << 20, max_output_bytes=8 << 20)
REPO_ROOT = Path(__file__).resolve().parents[2]


def one_row() -> pa.Table:
    return pa.table({"pseudonym": ["victim"], "x": [1.0]})


def probe(body: str, limits: Limits = LIMITS) -> str:
    """Run `body` (which sets `escaped = True/False`) inside a score() and return the decision."""
    source = (
        "def score(table):\n"
        + textwrap.indent(body, "    ")
        + ("\n    return ['escaped' if escaped else 'blocked'] * table.num_rows\n")
    )
    out = run_job(PythonModule(source, approved=True), one_row(), OUTCOME, limits)
    (decision,) = out.decisions.column("decision").to_pylist()
    return str(decision)


def attack(source: str, limits: Limits = LIMITS) -> JobFailed:
    """Run a hostile module that must not complete; return the failure."""
    with pytest.raises(JobFailed) as info:
        run_job(PythonModule(textwrap.dedent(source), approved=True), one_row(), OUTCOME, limits)
    return info.value


@pytest.fixture
def host_stays_healthy():
    yield
    # The host can still fork and exec, and the sandbox still runs an honest job.
    assert subprocess.run(["true"], check=False).returncode == 0
    honest = run_job(OnnxModel(onnx_factory.logistic_regression([1.0])), one_row(), OUTCOME, LIMITS)
    assert honest.decisions.num_rows == 1


# --- network -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["AF_INET", "AF_INET6", "AF_PACKET", "AF_NETLINK"])
def test_opening_a_network_socket_is_denied(family: str) -> None:
    body = f"""
import socket
try:
    s = socket.socket(socket.{family}, socket.SOCK_RAW if '{family}' == 'AF_PACKET' else socket.SOCK_DGRAM)
    escaped = True
except PermissionError:
    escaped = False
"""
    assert probe(body) == "blocked"


def test_tcp_connect_to_the_host_fails() -> None:
    body = """
import socket
try:
    socket.create_connection(('127.0.0.1', 5432), timeout=2)
    escaped = True
except OSError:
    escaped = False
"""
    assert probe(body) == "blocked"


# --- files -------------------------------------------------------------------------------------------------


def test_etc_passwd_is_absent() -> None:
    body = """
try:
    open('/etc/passwd').read()
    escaped = True
except FileNotFoundError:
    escaped = False
"""
    assert probe(body) == "blocked"


def test_server_key_file_and_database_are_unreachable(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    key_file.write_text('{"master_key": "TOP-SECRET"}')
    database = tmp_path / "dataspace.sqlite"
    database.write_bytes(b"SQLite format 3\x00 customer rows")
    targets = [str(key_file), str(database), str(REPO_ROOT / "pyproject.toml"), str(REPO_ROOT / "var")]
    body = f"""
import os
escaped = False
for path in {targets!r}:
    if os.path.exists(path):
        escaped = True
"""
    assert probe(body) == "blocked"


def test_nothing_of_the_repository_is_visible() -> None:
    body = f"""
import os
escaped = os.path.exists({str(REPO_ROOT)!r}) or os.path.exists('/root/.ssh') or os.path.exists('/home')
"""
    assert probe(body) == "blocked"


def test_writes_outside_tmp_fail_and_tmp_is_size_limited() -> None:
    body = """
escaped = False
for path in ['/sandbox/runner.py', '/evil', '/usr/lib/evil', '/sandbox/site/0/evil.py', '/etc/ld.so.cache']:
    try:
        with open(path, 'w') as f:
            f.write('x')
        escaped = True
    except OSError:
        pass
try:
    with open('/dev/shm/evil', 'wb') as f:
        f.write(b'x')
    escaped = True
except OSError:
    pass
total = 0
try:
    for i in range(64):  # many files, each under RLIMIT_FSIZE: the tmpfs size stops them
        with open(f'/tmp/part{i}', 'wb') as f:
            f.write(b'x' * (2 << 20))
        total += 2 << 20
    escaped = True
except OSError:
    escaped = escaped or total > 16 << 20
import os
for name in os.listdir('/tmp'):
    os.remove('/tmp/' + name)
try:  # one file past RLIMIT_FSIZE (4 MiB) while the tmpfs has room
    with open('/tmp/big', 'wb') as f:
        for _ in range(8):
            f.write(b'x' * (1 << 20))
    escaped = True
except OSError:
    pass
"""
    limits = Limits(**{**LIMITS.__dict__, "max_file_bytes": 4 << 20, "tmpfs_bytes": 16 << 20})
    assert probe(body, limits) == "blocked"


# --- processes and environment -----------------------------------------------------------------------------


def test_parent_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASPACE_SECRET_PROBE", "hunter2-in-the-parent")
    body = """
import os
escaped = any('hunter2' in v for v in os.environ.values())
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            if b'hunter2' in open(f'/proc/{pid}/environ', 'rb').read():
                escaped = True
        except OSError:
            pass
"""
    assert probe(body) == "blocked"


def test_other_processes_are_invisible_in_proc() -> None:
    body = f"""
import os
escaped = False
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            cmdline = open(f'/proc/{{pid}}/cmdline', 'rb').read()
        except OSError:
            continue
        if b'pytest' in cmdline or b'postgres' in cmdline:
            escaped = True
escaped = escaped or os.path.exists('/proc/{os.getpid()}/cwd/pyproject.toml')
"""
    assert probe(body) == "blocked"


@pytest.mark.usefixtures("host_stays_healthy")
def test_fork_bomb_is_contained() -> None:
    failure = attack(
        """
        import os
        def score(table):
            while True:
                os.fork()
        """
    )
    assert failure.reason == "model failed while scoring"
    assert "PermissionError" in failure.detail


def test_fork_is_denied_even_via_clone_or_multiprocessing() -> None:
    body = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
escaped = False
try:
    os.fork()
    escaped = True
except PermissionError:
    pass
# raw syscalls: clone(SIGCHLD) = 56, vfork = 58, clone3 = 435
if libc.syscall(56, 17, 0, 0, 0, 0) >= 0 or libc.syscall(58) >= 0 or libc.syscall(435, 0, 0) >= 0:
    escaped = True
try:
    import multiprocessing
    multiprocessing.Process(target=print).start()
    escaped = True
except Exception:
    pass
"""
    assert probe(body) == "blocked"


def test_spawning_a_shell_fails() -> None:
    body = """
import os, subprocess
escaped = False
try:
    subprocess.run(['/bin/sh', '-c', 'id'])
    escaped = True
except OSError:
    pass
if os.system('id') == 0:
    escaped = True
for shell in ['/bin/sh', '/bin/bash', '/usr/bin/sh', '/usr/bin/python3']:
    if os.path.exists(shell):
        escaped = True
"""
    assert probe(body) == "blocked"


def test_namespace_mount_and_ptrace_calls_are_denied() -> None:
    body = """
import ctypes, resource
libc = ctypes.CDLL(None, use_errno=True)
escaped = False
if libc.unshare(0x10000000) == 0:   # CLONE_NEWUSER
    escaped = True
if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0:
    escaped = True
if libc.ptrace(16, 1, None, None) == 0:   # PTRACE_ATTACH to pid 1
    escaped = True
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    escaped = True
except (ValueError, OSError):
    pass
"""
    assert probe(body) == "blocked"


def test_runs_as_nobody_without_capabilities() -> None:
    body = """
import os
status = open('/proc/self/status').read()
cap_eff = [l for l in status.splitlines() if l.startswith('CapEff:')][0].split()[1]
escaped = os.getuid() != 65534 or int(cap_eff, 16) != 0
"""
    assert probe(body) == "blocked"


# --- resource exhaustion -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("host_stays_healthy")
def test_memory_bomb_is_killed_by_the_address_space_limit() -> None:
    failure = attack(
        """
        def score(table):
            hoard = []
            while True:
                hoard.append(bytearray(64 << 20))
        """
    )
    assert failure.reason == "killed: memory limit"


def test_onnx_memory_bomb_is_killed() -> None:
    with pytest.raises(JobFailed) as info:
        run_job(OnnxModel(onnx_factory.memory_bomb(1)), one_row(), OUTCOME, LIMITS)
    assert info.value.reason == "killed: memory limit"


@pytest.mark.usefixtures("host_stays_healthy")
def test_infinite_loop_is_killed_by_the_cpu_limit() -> None:
    started = time.monotonic()
    failure = attack(
        """
        def score(table):
            while True:
                pass
        """,
        Limits(**{**LIMITS.__dict__, "cpu_seconds": 1}),
    )
    assert failure.reason == "killed: cpu limit"
    assert time.monotonic() - started < 10


def test_loop_ignoring_sigxcpu_is_still_killed() -> None:
    failure = attack(
        """
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        def score(table):
            while True:
                pass
        """,
        Limits(**{**LIMITS.__dict__, "cpu_seconds": 1}),
    )
    assert failure.reason == "killed: cpu or memory limit"


def test_sleeping_forever_is_killed_by_the_wall_clock() -> None:
    started = time.monotonic()
    failure = attack(
        """
        import time
        def score(table):
            time.sleep(3600)
        """,
        Limits(**{**LIMITS.__dict__, "wall_seconds": 2}),
    )
    assert failure.reason == "timeout"
    assert time.monotonic() - started < 8


@pytest.mark.usefixtures("host_stays_healthy")
def test_huge_output_is_cut_off() -> None:
    failure = attack(
        """
        import os
        def score(table):
            chunk = b'x' * (1 << 20)
            while True:
                os.write(3, chunk)
        """
    )
    assert failure.reason == "output too large"


def test_flooding_stderr_is_cut_off() -> None:
    failure = attack(
        """
        import sys
        def score(table):
            while True:
                print('x' * 100000)
        """
    )
    assert failure.reason == "output too large"


@pytest.mark.usefixtures("host_stays_healthy")
def test_thread_bomb_is_contained() -> None:
    failure = attack(
        """
        import threading, time
        def score(table):
            while True:
                threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        """,
        Limits(**{**LIMITS.__dict__, "wall_seconds": 5}),
    )
    assert failure.reason in {"model failed while scoring", "killed: memory limit", "timeout"}
    assert _no_sandbox_left_within(5.0)


def test_killed_jobs_leave_no_process_behind() -> None:
    attack(
        """
        import time
        def score(table):
            time.sleep(3600)
        """,
        Limits(**{**LIMITS.__dict__, "wall_seconds": 1}),
    )
    assert _no_sandbox_left_within(5.0)


def _no_sandbox_left_within(seconds: float) -> bool:
    """The kernel tears a killed pid namespace down asynchronously: allow it a moment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(pid.isdigit() and b"/sandbox/runner.py" in _cmdline(pid) for pid in os.listdir("/proc")):
            return True
        time.sleep(0.05)
    return False


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
