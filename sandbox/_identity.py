"""Who partner code is on the host: never uid 0, never a capability in the host user namespace.

- Server not root: ``--unshare-user --uid 65534 --disable-userns --cap-drop ALL``. The sandbox's
  uid 65534 is the server's own unprivileged uid on the host; it has no capability outside its own user
  namespace, and cannot create another one.
- Server root (the demo, CI, many containers): a user namespace would map the sandbox onto host uid 0
  (root with a seccomp filter is still root towards every root-owned file it can reach and every kernel
  knob it can write). Dropping to an unprivileged uid BEFORE bubblewrap is not possible either: bwrap
  then cannot read a runtime that lives under a 0700 home (/root/.pyenv) and an unprivileged user
  namespace is again all it has. So bwrap runs as root without a user namespace (root does the mounts),
  keeps only CAP_SETUID, CAP_SETGID and CAP_SETPCAP for the runner, and the runner's very first action,
  before it imports anything or reads one byte of input, is: empty the capability bounding set,
  ``setgroups([])``, ``setresgid``/``setresuid`` to the dedicated system user `SANDBOX_USER`
  (``dataspace-sandbox``, created by ``dataspace init``, ``./run`` and ``.ci/run``), then verify it
  (all uids and gids, no supplementary group, effective/permitted/inheritable/ambient/bounding
  capabilities all empty, no_new_privs set) and exit otherwise. A dedicated user rather than ``nobody``:
  it shares its uid with no other daemon. Without that user a root server refuses code-bearing jobs
  (`SandboxUnavailable`), exactly as without bubblewrap. RLIMIT_NPROC is not applied in this mode: it
  counts every process of the uid on the host, so one sandbox could starve every concurrent one; seccomp
  forbids fork and RLIMIT_AS bounds the number of threads. Sandboxes sharing the uid cannot reach one
  another: each has its own pid namespace (no pid of another to signal), its own /tmp, and no /proc.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass

from sandbox._errors import SandboxUnavailable

__all__ = ["KEPT_CAPS", "SANDBOX_USER", "Identity", "ensure_sandbox_user", "sandbox_identity"]

SANDBOX_USER = "dataspace-sandbox"  # the host user partner code runs as when the server is root
KEPT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")  # for the runner's drop, and nothing else


@dataclass(frozen=True)
class Identity:
    """The host uid/gid partner code runs as; `drop`: the runner switches to it itself (server is root)."""

    uid: int
    gid: int
    drop: bool


def sandbox_identity(user: str = SANDBOX_USER) -> Identity:
    """Who partner code will be on the host, or `SandboxUnavailable` if that would be root."""
    if os.geteuid() != 0 and 0 not in os.getresuid():
        return Identity(os.getuid(), os.getgid(), drop=False)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SandboxUnavailable(
            f"the server runs as root and the system user {user!r} does not exist: refusing to run partner "
            f"code as root (create it with `dataspace init` as root, or `useradd --system --user-group {user}`)"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxUnavailable(f"the sandbox user {user!r} is root: refusing to run partner code as root")
    return Identity(entry.pw_uid, entry.pw_gid, drop=True)


def ensure_sandbox_user(user: str = SANDBOX_USER) -> str:
    """Create the system user partner code runs as, if the server runs as root (``dataspace init``).

    Returns what happened: "created", "exists", or "not needed" (not root: the sandbox then runs as the
    server's own uid through a user namespace). A locked system account: no home, no shell, no password.
    """
    if os.geteuid() != 0:
        return "not needed"
    try:
        pwd.getpwnam(user)
    except KeyError:
        pass
    else:
        return "exists"
    useradd = shutil.which("useradd")
    if useradd is None:
        raise SandboxUnavailable(f"cannot create the sandbox user {user!r}: useradd is not installed")
    account = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    result = subprocess.run(
        [useradd, *account, "--shell", "/usr/sbin/nologin", user],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SandboxUnavailable(f"cannot create the sandbox user {user!r}: {result.stderr.strip()[:200]}")
    return "created"
