"""The seccomp filter handed to bubblewrap (``--seccomp FD``): a classic BPF program built by hand.

Built without libseccomp so the sandbox has no native dependency beyond bubblewrap. Only x86_64 is
supported (the syscall numbers below come from ``asm/unistd_64.h``); on any other architecture
`build_filter` raises `UnsupportedArchitecture` and the launcher refuses to run (never runs unfiltered).

Policy: allow by default, deny the calls a scoring model never needs and an attacker wants.

- Foreign ABI: a syscall made with another architecture's calling convention (e.g. ``int 0x80``) kills the
  process; x32 syscall numbers (bit 30 set) return EPERM. Both would otherwise bypass the number checks.
- Process creation: ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD`` return EPERM, and
  ``clone`` with any ``CLONE_NEW*`` flag too. Threads stay possible (onnxruntime, pyarrow and numpy use
  them). ``clone3`` returns ENOSYS because its flags sit behind a pointer seccomp cannot read; glibc then
  falls back to ``clone``. This is what contains fork bombs and shell spawning: RLIMIT_NPROC is not
  enforced when the sandbox's outer uid is root, so it cannot be relied on.
- Network: ``socket`` for any family but AF_UNIX returns EPERM (the network namespace is empty anyway;
  AF_UNIX cannot reach the host: abstract sockets are per network namespace, no host path is mounted).
- Kernel attack surface and namespace games: ptrace, process_vm_readv/writev, kcmp, mount and the new
  mount API (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr), umount2,
  pivot_root, chroot, unshare, setns, keyctl, add_key, request_key, bpf, perf_event_open, userfaultfd,
  io_uring_*, open_by_handle_at, name_to_handle_at, kexec_*, *_module, reboot, swapon/off, acct, syslog,
  quotactl, settimeofday, clock_settime, clock_adjtime, adjtimex, mknod(at), ioperm, iopl,
  fanotify_init, personality, sethostname, setdomainname, lookup_dcookie, vhangup, migrate_pages,
  move_pages, uselib: all return EPERM.
"""

from __future__ import annotations

import platform
import struct

__all__ = ["DENIED_SYSCALLS", "UnsupportedArchitecture", "build_filter"]


class UnsupportedArchitecture(RuntimeError):
    """No syscall table for this machine's architecture: the sandbox cannot be filtered."""


# x86_64 syscall numbers (asm/unistd_64.h).
DENIED_SYSCALLS: dict[str, int] = {
    "fork": 57,
    "vfork": 58,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
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
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
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
    "personality": 135,
    "sethostname": 170,
    "setdomainname": 171,
    "lookup_dcookie": 212,
    "vhangup": 153,
    "migrate_pages": 256,
    "move_pages": 279,
    "uselib": 134,
}
_NR_CLONE = 56
_NR_CLONE3 = 435
_NR_SOCKET = 41

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
_AF_UNIX = 1
_EPERM = 1
_ENOSYS = 38

# seccomp_data offsets: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little endian).
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LO = 16

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


def build_filter(machine: str | None = None) -> bytes:
    """The compiled filter for this machine (``struct sock_filter[]``, as ``seccomp_export_bpf`` writes)."""
    machine = machine or platform.machine()
    if machine not in {"x86_64", "AMD64", "amd64"}:
        raise UnsupportedArchitecture(f"no seccomp syscall table for architecture {machine!r}")
    program: list[_Insn | str] = [
        (_LD_W_ABS, None, None, _OFF_ARCH),
        (_JEQ_K, "native", "kill", _AUDIT_ARCH_X86_64),
        "native",
        (_LD_W_ABS, None, None, _OFF_NR),
        (_JGE_K, "eperm", None, _X32_SYSCALL_BIT),
    ]
    program += [(_JEQ_K, "eperm", None, nr) for nr in sorted(set(DENIED_SYSCALLS.values()))]
    program += [
        (_JEQ_K, "enosys", None, _NR_CLONE3),
        (_JEQ_K, "clone", None, _NR_CLONE),
        (_JEQ_K, "socket", None, _NR_SOCKET),
        (_RET_K, None, None, _RET_ALLOW),
        "clone",
        (_LD_W_ABS, None, None, _OFF_ARG0_LO),
        (_JSET_K, "eperm", None, _CLONE_NEW_FLAGS),
        (_JSET_K, "allow", "eperm", _CLONE_THREAD),
        "socket",
        (_LD_W_ABS, None, None, _OFF_ARG0_LO),
        (_JEQ_K, "allow", "eperm", _AF_UNIX),
        "allow",
        (_RET_K, None, None, _RET_ALLOW),
        "eperm",
        (_RET_K, None, None, _RET_ERRNO | _EPERM),
        "enosys",
        (_RET_K, None, None, _RET_ERRNO | _ENOSYS),
        "kill",
        (_RET_K, None, None, _RET_KILL_PROCESS),
    ]
    return _assemble(program)
