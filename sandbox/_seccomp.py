"""The seccomp filter handed to bubblewrap (``--seccomp FD``): a classic BPF program built by hand.

Built without libseccomp so the sandbox has no native dependency beyond bubblewrap. Only x86_64 is
supported (the syscall numbers below come from ``asm/unistd_64.h``); on any other architecture
`build_filter` raises `UnsupportedArchitecture` and the launcher refuses to run (never runs unfiltered).

Policy: an ALLOW-LIST. The filter is installed by bwrap just before it executes the Python interpreter, so
the list is what CPython, numpy, pyarrow (jemalloc, its thread pool) and onnxruntime use from ``execve`` on
(measured with strace on the sandbox's own jobs: ONNX with 1 and 2 threads, inspection, a Python module
using numpy, pyarrow.compute, threads and tempfile), plus what an honest scoring module may reasonably do in
/tmp. Everything else returns EPERM: in particular pidfd_open / pidfd_getfd / pidfd_send_signal (stealing
another process's descriptors), process_madvise / process_mrelease, ptrace, process_vm_*, kcmp, every
socket call, the mount API and namespaces (unshare, setns), keyctl, bpf, perf_event_open, userfaultfd,
io_uring, memfd_create, inotify/fanotify, SysV/POSIX IPC, splice/vmsplice/tee, mlock, chown, setuid and
friends, open_by_handle_at, kexec/modules/reboot/swap/clock setting, personality and every syscall added
after this list was written.

Why each allowed family is needed (see `ALLOWED_SYSCALLS`):

- memory: the allocators (glibc malloc, jemalloc in pyarrow, onnxruntime's arena) map, protect, advise
  and remap memory; jemalloc sets a NUMA policy (mbind, get_mempolicy).
- files: the interpreter and the runtime's shared libraries are opened, mapped and stat-ed on the
  read-only tree; a scoring module may use /tmp (a size-limited tmpfs) through tempfile/shutil (mkdir,
  rename, unlink, sendfile/copy_file_range, the read-only xattr calls shutil.copy2 makes).
- ioctl: only TCGETS, TIOCGWINSZ, FIONREAD, FIONBIO, FIOCLEX and FIONCLEX (isatty, terminal size,
  non-blocking and close-on-exec flags); no terminal or device ioctl.
- io_wait: pipes, poll/select/epoll and eventfd: selectors, asyncio and the runtimes' thread pools.
- threads: ``clone`` only with CLONE_THREAD and without any CLONE_NEW* flag (threads yes, processes
  and namespaces no); ``clone3`` returns ENOSYS because its flags sit behind a pointer seccomp cannot
  read (glibc then falls back to ``clone``); futex, rseq, robust lists, affinity for the thread pools.
  Forbidding process creation is what contains fork bombs and shell spawning.
- signals: CPython's signal handling, SIGXCPU at the CPU limit, thread wake-ups; kill/tgkill reach only
  the sandbox's own pid namespace, where pid 1 (bwrap) is another user's.
- process: the final ``execve`` of the interpreter itself, exit, rlimits (``prlimit64`` only on the
  calling process: pid argument 0), resource usage for the runner's statistics, uname, sysinfo,
  getrandom; ``prctl``: the runner empties the capability bounding set and checks no_new_privs, the
  runtimes name their threads (any privileged prctl needs a capability the sandbox does not have).
- identity: the runner's drop to the sandbox user (setgroups, setresgid, setresuid, capset) and its
  checks (get*id, getgroups, capget); after the drop these calls cannot raise privileges any more.
- time: clocks, sleeps and interval timers.

Foreign ABI: a syscall made with another architecture's calling convention (e.g. ``int 0x80``) kills the
process; x32 syscall numbers (bit 30 set) return EPERM. Both would otherwise bypass the number checks.
"""

from __future__ import annotations

import functools
import platform
import struct

__all__ = ["ALLOWED_SYSCALLS", "DENIED_SYSCALLS", "UnsupportedArchitecture", "build_filter"]


class UnsupportedArchitecture(RuntimeError):
    """No syscall table for this machine's architecture: the sandbox cannot be filtered."""


# x86_64 syscall numbers (asm/unistd_64.h), by family; the docstring says why each family is needed.
ALLOWED_SYSCALLS: dict[str, dict[str, int]] = {
    "memory": {
        "brk": 12,
        "mmap": 9,
        "munmap": 11,
        "mprotect": 10,
        "mremap": 25,
        "madvise": 28,
        "msync": 26,
        "mincore": 27,
        "mbind": 237,
        "get_mempolicy": 239,
    },
    "files": {
        "read": 0,
        "write": 1,
        "readv": 19,
        "writev": 20,
        "pread64": 17,
        "pwrite64": 18,
        "preadv": 295,
        "pwritev": 296,
        "preadv2": 327,
        "pwritev2": 328,
        "open": 2,
        "openat": 257,
        "close": 3,
        "close_range": 436,
        "lseek": 8,
        "fstat": 5,
        "stat": 4,
        "lstat": 6,
        "newfstatat": 262,
        "statx": 332,
        "statfs": 137,
        "fstatfs": 138,
        "access": 21,
        "faccessat": 269,
        "faccessat2": 439,
        "readlink": 89,
        "readlinkat": 267,
        "getdents64": 217,
        "getcwd": 79,
        "chdir": 80,
        "fchdir": 81,
        "mkdir": 83,
        "mkdirat": 258,
        "rmdir": 84,
        "unlink": 87,
        "unlinkat": 263,
        "rename": 82,
        "renameat": 264,
        "renameat2": 316,
        "link": 86,
        "linkat": 265,
        "symlink": 88,
        "symlinkat": 266,
        "truncate": 76,
        "ftruncate": 77,
        "fallocate": 285,
        "fsync": 74,
        "fdatasync": 75,
        "fadvise64": 221,
        "umask": 95,
        "chmod": 90,
        "fchmod": 91,
        "fchmodat": 268,
        "utimensat": 280,
        "dup": 32,
        "dup2": 33,
        "dup3": 292,
        "fcntl": 72,
        "flock": 73,
        "sendfile": 40,
        "copy_file_range": 326,
        "getxattr": 191,
        "lgetxattr": 192,
        "fgetxattr": 193,
        "listxattr": 194,
        "llistxattr": 195,
        "flistxattr": 196,
    },
    "io_wait": {
        "pipe": 22,
        "pipe2": 293,
        "poll": 7,
        "ppoll": 271,
        "select": 23,
        "pselect6": 270,
        "epoll_create": 213,
        "epoll_create1": 291,
        "epoll_ctl": 233,
        "epoll_wait": 232,
        "epoll_pwait": 281,
        "epoll_pwait2": 441,
        "eventfd": 284,
        "eventfd2": 290,
    },
    "threads": {
        "set_tid_address": 218,
        "set_robust_list": 273,
        "rseq": 334,
        "futex": 202,
        "futex_waitv": 449,
        "gettid": 186,
        "sched_yield": 24,
        "sched_getaffinity": 204,
        "sched_setaffinity": 203,
        "sched_getparam": 143,
        "sched_getscheduler": 145,
        "sched_get_priority_max": 146,
        "sched_get_priority_min": 147,
        "getcpu": 309,
        "exit": 60,
    },
    "signals": {
        "rt_sigaction": 13,
        "rt_sigprocmask": 14,
        "rt_sigreturn": 15,
        "rt_sigpending": 127,
        "rt_sigtimedwait": 128,
        "rt_sigsuspend": 130,
        "sigaltstack": 131,
        "kill": 62,
        "tgkill": 234,
        "tkill": 200,
        "pause": 34,
        "restart_syscall": 219,
    },
    "process": {
        "execve": 59,
        "exit_group": 231,
        "wait4": 61,
        "arch_prctl": 158,
        "prctl": 157,
        "getpid": 39,
        "getppid": 110,
        "getpgrp": 111,
        "getpgid": 121,
        "getsid": 124,
        "getrlimit": 97,
        "setrlimit": 160,
        "getrusage": 98,
        "times": 100,
        "sysinfo": 99,
        "uname": 63,
        "getrandom": 318,
        "getpriority": 140,
    },
    "identity": {
        "getuid": 102,
        "geteuid": 107,
        "getgid": 104,
        "getegid": 108,
        "getresuid": 118,
        "getresgid": 120,
        "getgroups": 115,
        "setgroups": 116,
        "setresuid": 117,
        "setresgid": 119,
        "capget": 125,
        "capset": 126,
    },
    "time": {
        "clock_gettime": 228,
        "clock_getres": 229,
        "clock_nanosleep": 230,
        "nanosleep": 35,
        "gettimeofday": 96,
        "time": 201,
        "alarm": 37,
        "getitimer": 36,
        "setitimer": 38,
    },
}

# Calls an attacker wants: never on the allow-list (checked by the tests; listed here so a later edit of
# the allow-list that lets one through fails loudly).
DENIED_SYSCALLS: dict[str, int] = {
    "fork": 57,
    "vfork": 58,
    "execveat": 322,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "process_madvise": 440,
    "process_mrelease": 448,
    "pidfd_open": 434,
    "pidfd_getfd": 438,
    "pidfd_send_signal": 424,
    "kcmp": 312,
    "socket": 41,
    "socketpair": 53,
    "connect": 42,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "unshare": 272,
    "setns": 308,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "memfd_create": 319,
    "memfd_secret": 447,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "openat2": 437,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "syslog": 103,
    "quotactl": 179,
    "settimeofday": 164,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "adjtimex": 159,
    "mknod": 133,
    "mknodat": 259,
    "ioperm": 173,
    "iopl": 172,
    "fanotify_init": 300,
    "inotify_init1": 294,
    "personality": 135,
    "sethostname": 170,
    "setdomainname": 171,
    "lookup_dcookie": 212,
    "vhangup": 153,
    "migrate_pages": 256,
    "move_pages": 279,
    "set_mempolicy": 238,
    "uselib": 134,
    "mlock": 149,
    "mlockall": 151,
    "splice": 275,
    "vmsplice": 278,
    "tee": 276,
    "shmget": 29,
    "msgget": 68,
    "semget": 64,
    "mq_open": 240,
    "setuid": 105,
    "setgid": 106,
    "setreuid": 113,
    "setregid": 114,
    "setfsuid": 122,
    "setfsgid": 123,
    "setsid": 112,
    "setpgid": 109,
    "chown": 92,
    "fchown": 93,
    "lchown": 94,
    "fchownat": 260,
    "sync": 162,
    "syncfs": 306,
    "landlock_create_ruleset": 444,
}
_NR_IOCTL = 16
_NR_PRLIMIT64 = 302
_NR_CLONE = 56
_NR_CLONE3 = 435

# ioctl requests a scoring runtime makes (asm-generic/ioctls.h): TCGETS (isatty), TIOCGWINSZ, FIONREAD,
# FIONBIO, FIONCLEX, FIOCLEX. The kernel reads the request as a 32-bit int, so the low word is compared.
_ALLOWED_IOCTLS = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000

_CLONE_THREAD = 0x00010000
_CLONE_NEW_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)
_EPERM = 1
_ENOSYS = 38

# seccomp_data offsets: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little endian).
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LO = 16
_OFF_ARG0_HI = 20
_OFF_ARG1_LO = 24

# Classic BPF opcodes.
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# An instruction: (code, true target, false target, k); a target is a label name or None (= next).
_Insn = tuple[int, str | None, str | None, int]


def _assemble(program: list[_Insn | str]) -> bytes:
    """Resolve label names (plain strings in `program`) to relative jumps and pack ``sock_filter``s."""
    labels: dict[str, int] = {}
    insns: list[_Insn] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)

    def offset(at: int, target: str | None) -> int:
        if target is None:
            return 0
        delta = labels[target] - at - 1
        if not 0 <= delta <= 255:  # pragma: no cover - the program is small and only jumps forward
            raise ValueError(f"jump to {target} out of range")
        return delta

    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(insns):
        out += struct.pack("=HBBI", code, offset(i, jt), offset(i, jf), k)
    return bytes(out)


@functools.cache
def build_filter(machine: str | None = None) -> bytes:
    """The compiled filter for this machine (``struct sock_filter[]``, as ``seccomp_export_bpf`` writes).

    Built once per process (about 0.07 ms), then handed to every sandbox's bwrap through a pipe.
    """
    machine = machine or platform.machine()
    if machine not in {"x86_64", "AMD64", "amd64"}:
        raise UnsupportedArchitecture(f"no seccomp syscall table for architecture {machine!r}")
    allowed = sorted({nr for family in ALLOWED_SYSCALLS.values() for nr in family.values()})
    program: list[_Insn | str] = [
        (_LD_W_ABS, None, None, _OFF_ARCH),
        (_JEQ_K, "native", "kill", _AUDIT_ARCH_X86_64),
        "native",
        (_LD_W_ABS, None, None, _OFF_NR),
        (_JGE_K, "eperm", None, _X32_SYSCALL_BIT),
    ]
    program += [(_JEQ_K, "allow", None, nr) for nr in allowed]
    program += [
        (_JEQ_K, "clone", None, _NR_CLONE),
        (_JEQ_K, "ioctl", None, _NR_IOCTL),
        (_JEQ_K, "prlimit", None, _NR_PRLIMIT64),
        (_JEQ_K, "enosys", "eperm", _NR_CLONE3),
        "clone",
        (_LD_W_ABS, None, None, _OFF_ARG0_LO),
        (_JSET_K, "eperm", None, _CLONE_NEW_FLAGS),
        (_JSET_K, "allow", "eperm", _CLONE_THREAD),
        "ioctl",
        (_LD_W_ABS, None, None, _OFF_ARG1_LO),
        *[(_JEQ_K, "allow", None, request) for request in _ALLOWED_IOCTLS],
        (_RET_K, None, None, _RET_ERRNO | _EPERM),
        "prlimit",  # only on the calling process (pid 0): never on bwrap's pid 1
        (_LD_W_ABS, None, None, _OFF_ARG0_LO),
        (_JEQ_K, None, "eperm", 0),
        (_LD_W_ABS, None, None, _OFF_ARG0_HI),
        (_JEQ_K, "allow", "eperm", 0),
        "allow",
        (_RET_K, None, None, _RET_ALLOW),
        "eperm",
        (_RET_K, None, None, _RET_ERRNO | _EPERM),
        "enosys",
        (_RET_K, None, None, _RET_ERRNO | _ENOSYS),
        "kill",
        (_RET_K, None, None, _RET_KILL_PROCESS),
    ]
    overlap = set(allowed) & set(DENIED_SYSCALLS.values())
    if overlap:  # pragma: no cover - a programming error, caught by the unit tests too
        raise ValueError(f"syscalls both allowed and denied: {sorted(overlap)}")
    return _assemble(program)
