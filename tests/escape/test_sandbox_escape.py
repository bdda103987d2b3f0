"""Hostile partner code against the sandbox: every attempt must fail or be killed, the host stays healthy.

Probe-style modules try an attack and report what they saw as the decision ("blocked" or "escaped"), so a
test proves the attack itself failed rather than the job failing for an unrelated reason. Bomb-style
modules must be killed with the specific reason.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pytest

from sandbox import DecisionSchema, JobFailed, Limits, OnnxModel, PythonModule, run_job
from sandbox._identity import SANDBOX_USER
from tests.unit.sandbox import onnx_factory

pytestmark = pytest.mark.escape

OUTCOME = DecisionSchema.of_labels("blocked", "escaped")
LIMITS = Limits(cpu_seconds=10, wall_seconds=30, memory_bytes=1024 << 20, max_output_bytes=8 << 20)
REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


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
for pid in os.listdir('/proc') if os.path.isdir('/proc') else []:
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
for pid in os.listdir('/proc') if os.path.isdir('/proc') else []:
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


# --- privilege on the host (issue 13: partner code ran as host root when the server did) ---------------------

# Partner code checks its own identity; it then names its thread so the host can find it among this test's
# own processes and read /proc/<pid>/status from outside.
IDENTITY_ATTACK = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
header = (ctypes.c_uint32 * 2)(0x20080522, 0)   # _LINUX_CAPABILITY_VERSION_3, this thread
caps = (ctypes.c_uint32 * 6)()
escaped = libc.capget(header, caps) != 0 or any(caps)
escaped = escaped or 0 in os.getresuid() or 0 in os.getresgid()
ambient = [c for c in range(41) if libc.prctl(47, 1, c, 0, 0) == 1]   # PR_CAP_AMBIENT_IS_SET
escaped = escaped or bool(ambient)
for uid in (0, 1):   # regaining root or any other uid
    try:
        os.setresuid(uid, uid, uid)
        escaped = True
    except OSError:
        pass
libc.prctl(15, b'partner-ready', 0, 0, 0)   # PR_SET_NAME: the host looks for this
time.sleep(4)
"""

SYSCTL_ATTACK = """
import os
escaped = False
for knob in ['/proc/sys/kernel/core_pattern', '/proc/sys/kernel/printk_ratelimit', '/proc/sysrq-trigger',
             '/proc/sys/vm/drop_caches', '/proc/irq/default_smp_affinity', '/proc/sys/fs/suid_dumpable']:
    try:
        with open(knob, 'w') as f:
            f.write('|/tmp/pwn %p' if 'core_pattern' in knob else '0')
        escaped = True
    except OSError:
        pass
writable = 0
for root, dirs, files in os.walk('/proc/sys'):
    writable += sum(os.access(os.path.join(root, f), os.W_OK) for f in files)
for path in ['/proc/kcore', '/proc/kallsyms', '/proc/bus', '/proc/fs', '/sys', '/dev/mem', '/dev/kmsg']:
    escaped = escaped or os.path.exists(path)
escaped = escaped or writable > 0
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs('/tmp/proc', exist_ok=True)
for target in [b'/proc', b'/tmp/proc']:   # mounting a proc of its own
    if libc.mount(b'proc', target, b'proc', 0, None) == 0:
        escaped = True
"""

PIDFD_ATTACK = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
escaped = False
# pidfd_open(434) on bwrap's init and on itself, pidfd_getfd(438) to take their descriptors,
# pidfd_send_signal(424), process_madvise(440), process_vm_readv(310), kcmp(312)
for pid in (1, os.getpid()):
    pidfd = libc.syscall(434, pid, 0)
    if pidfd >= 0:
        escaped = True
        for fd in range(16):
            if libc.syscall(438, pidfd, fd, 0) >= 0:
                escaped = True
for number, args in [(438, (0, 0, 0)), (438, (3, 0, 0)), (424, (0, 9, 0, 0)), (440, (0, 0, 0, 0, 0)),
                     (310, (1, 0, 0, 0, 0, 0)), (312, (1, 2, 0, 0, 0))]:
    if libc.syscall(number, *args) >= 0 or ctypes.get_errno() != 1:   # must be EPERM from seccomp
        escaped = True
"""


def host_path_attack() -> str:
    """Everything the sandbox can read about itself must name no host path (repository, venv, home, prefix)."""
    secrets = sorted(
        {str(REPO_ROOT), os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), "/root", "/work", "/home"}
    )
    return f"""
import os, sys
seen = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.executable, os.getcwd()]
seen += list(sys.path) + list(os.environ.values()) + list(os.environ)
import numpy, pyarrow, onnxruntime
seen += [numpy.__file__, pyarrow.__file__, onnxruntime.__file__]
for path in ['/proc/self/mountinfo', '/proc/self/mounts', '/proc/1/cmdline', '/proc/self/cmdline',
             '/proc/1/environ', '/proc/self/environ', '/proc/self/maps', '/proc/1/mountinfo']:
    try:
        seen.append(open(path, 'rb').read().decode('utf-8', 'replace'))
    except OSError:
        pass
for path in ['/proc/1/cwd', '/proc/1/root', '/proc/1/exe', '/proc/self/exe']:
    try:
        seen.append(os.readlink(path))
    except OSError:
        pass
escaped = any(secret in text for secret in {secrets!r} for text in seen)
"""


def test_partner_code_is_never_host_root_nor_holds_a_capability() -> None:
    """Checked from inside (the model's view) and from the host (/proc/<pid>/status of this test's own sandbox)."""
    seen: list[dict[str, str]] = []

    def look() -> bool:
        for pid, _ in own_sandbox_processes():
            if _read(f"/proc/{pid}/comm").strip() == b"partner-ready":
                seen.append(_status(pid))
                return True
        return False

    assert while_running(lambda: probe(IDENTITY_ATTACK), look) == "blocked"
    assert seen, "the partner's process was not found among this test's sandboxes"
    assert_unprivileged_on_host(seen[0], server_root=os.geteuid() == 0)


def assert_unprivileged_on_host(status: dict[str, str], *, server_root: bool) -> None:
    uids = {int(v) for v in status["Uid"].split()}
    gids = {int(v) for v in status["Gid"].split()}
    expected = pwd.getpwnam(SANDBOX_USER) if server_root else None
    assert 0 not in uids
    assert 0 not in gids
    if expected is not None:
        assert uids == {expected.pw_uid}
        assert gids == {expected.pw_gid}
        assert status["Groups"] == ""
        assert int(status["CapBnd"], 16) == 0
    for capability_set in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[capability_set], 16) == 0, capability_set
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


def test_kernel_knobs_under_proc_cannot_be_written() -> None:
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_bytes()
    ratelimit = Path("/proc/sys/kernel/printk_ratelimit").read_bytes()
    assert probe(SYSCTL_ATTACK) == "blocked"
    assert Path("/proc/sys/kernel/core_pattern").read_bytes() == core_pattern
    assert Path("/proc/sys/kernel/printk_ratelimit").read_bytes() == ratelimit


def test_pidfd_theft_and_cross_process_calls_are_denied() -> None:
    assert probe(PIDFD_ATTACK) == "blocked"


def test_no_host_path_is_visible_from_inside() -> None:
    assert probe(host_path_attack()) == "blocked"


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
    sandboxes: set[tuple[int, bytes]] = set()

    def bomb() -> JobFailed:
        return attack(
            """
            import threading, time
            def score(table):
                while True:
                    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
            """,
            Limits(**{**LIMITS.__dict__, "wall_seconds": 5}),
        )

    before = own_sandbox_processes()  # e.g. warm runners an earlier test of this worker keeps: not this job's
    failure = while_running(bomb, lambda: bool(sandboxes.update(own_sandbox_processes() - before)))
    assert failure.reason in {"model failed while scoring", "killed: memory limit", "timeout"}
    assert sandboxes
    assert gone_within(sandboxes, 5.0)


def test_killed_jobs_leave_no_process_behind() -> None:
    sandboxes: set[tuple[int, bytes]] = set()

    def sleeper() -> JobFailed:
        return attack(
            """
            import time
            def score(table):
                time.sleep(3600)
            """,
            Limits(**{**LIMITS.__dict__, "wall_seconds": 2}),
        )

    before = own_sandbox_processes()  # e.g. warm runners an earlier test of this worker keeps: not this job's
    failure = while_running(sleeper, lambda: bool(sandboxes.update(own_sandbox_processes() - before)))
    assert failure.reason == "timeout"
    assert sandboxes
    assert gone_within(sandboxes, 5.0)


# --- the same attacks with the server running as an unprivileged user ----------------------------------------

UNPRIVILEGED_SERVER = """
import json, sys
from tests.escape import test_sandbox_escape as t
results = {}
for name, body in [('identity', t.IDENTITY_ATTACK), ('sysctl', t.SYSCTL_ATTACK), ('pidfd', t.PIDFD_ATTACK),
                   ('host_paths', t.host_path_attack())]:
    try:
        results[name] = t.probe(body)
    except Exception as exc:
        results[name] = f'{type(exc).__name__}: {exc}'
print(json.dumps(results))
"""


def test_escape_checks_hold_when_the_server_is_not_root(tmp_path: Path) -> None:
    """A server started as `nobody` launches the sandbox through its user-namespace path; the attacks still fail."""
    if os.geteuid() != 0:
        pytest.skip("the server already runs as a non-root user: every test in this file is the non-root run")
    tools = {tool: shutil.which(tool) for tool in ("unshare", "setpriv", "mount")}
    if not all(tools.values()):
        pytest.skip(f"needs util-linux's unshare, setpriv and mount to start a non-root server: {tools}")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    userns = subprocess.run([*drop, "unshare", "--user", "true"], capture_output=True, check=False)
    if userns.returncode != 0:
        pytest.skip(f"this kernel refuses unprivileged user namespaces: {userns.stderr.decode().strip()}")
    # The interpreter may live under a home only root can traverse (/root/.pyenv): in a private mount
    # namespace, cover that home with an empty world-traversable tmpfs and bind the installation back.
    prefix = Path(os.path.realpath(sys.base_prefix))
    blocked = next((p for p in reversed(prefix.parents) if p != Path("/") and not p.stat().st_mode & 0o001), None)
    setup = ["set -e"]
    if blocked is not None:
        runtime = tmp_path / "runtime"
        runtime.mkdir()
        setup += [
            f"mount --bind '{prefix}' '{runtime}'",
            f"mount -t tmpfs -o mode=0755,size=1m tmpfs '{blocked}'",
            f"mkdir -p '{prefix}'",
            f"mount --bind '{runtime}' '{prefix}'",
        ]
    python = REPO_ROOT / ".venv" / "bin" / "python" if (REPO_ROOT / ".venv").exists() else Path(sys.executable)
    setup.append(" ".join([*drop, "--", f"'{python}'", "-c", '"$SCRIPT"']))
    server: list[subprocess.Popen[str]] = []
    seen: list[dict[str, str]] = []

    def start() -> str:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(setup)],
            cwd=REPO_ROOT,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "SCRIPT": UNPRIVILEGED_SERVER,
                "PYTHONPATH": str(REPO_ROOT),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        server.append(proc)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        return out

    def look() -> bool:
        if not server:
            return False
        for pid, _ in own_sandbox_processes(server[0].pid):
            if _read(f"/proc/{pid}/comm").strip() == b"partner-ready":
                seen.append(_status(pid))
                return True
        return False

    results = json.loads(while_running(start, look).strip().splitlines()[-1])
    assert results == {"identity": "blocked", "sysctl": "blocked", "pidfd": "blocked", "host_paths": "blocked"}
    assert seen, "the partner's process was not found among this test's sandboxes"
    assert_unprivileged_on_host(seen[0], server_root=False)
    assert {int(v) for v in seen[0]["Uid"].split()} == {65534}  # the server's own uid, not root


# --- this test's own processes only (other tests' sandboxes may run at the same time) ------------------------


def while_running(job: Callable[[], T], look: Callable[[], bool], interval: float = 0.02) -> T:
    """Run `job` in a thread and call `look` (until it returns True) while the job runs; the job's result."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(job())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    done = False
    while thread.is_alive():
        if not done:
            done = look()
        time.sleep(interval)
    thread.join()
    if error:
        raise error[0]
    return result[0]


def own_sandbox_processes(root: int | None = None) -> set[tuple[int, bytes]]:
    """(pid, start time) of the sandbox processes (bwrap and the runner) descending from `root` (this process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                children.setdefault(int(stat.rsplit(b")", 1)[1].split()[1]), []).append(int(entry))
    found: set[tuple[int, bytes]] = set()
    stack = [root or os.getpid()]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child)
            if b"/sandbox/runner.py" in _read(f"/proc/{child}/cmdline"):
                found.add((child, _start_time(child)))
    return found


def gone_within(processes: set[tuple[int, bytes]], seconds: float) -> bool:
    """The kernel tears a killed pid namespace down asynchronously: allow it a moment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = {
            (pid, started)
            for pid, started in processes
            if _start_time(pid) == started and b"/sandbox/runner.py" in _read(f"/proc/{pid}/cmdline")
        }
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _start_time(pid: int) -> bytes:
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(b")", 1)[1].split()[19] if stat else b""


def _status(pid: int) -> dict[str, str]:
    lines = _read(f"/proc/{pid}/status").decode().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""
