"""The host identity partner code gets: the sandbox user `dataspace init` creates, and who a root server drops to."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

from sandbox import SANDBOX_USER, SandboxUnavailable, ensure_sandbox_user
from sandbox._identity import sandbox_identity

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox user is created and used only by a root server")


@as_root
def test_init_creates_a_locked_unprivileged_system_user() -> None:
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("needs useradd and userdel")
    name = f"ds-sbx-test-{os.getpid()}"
    try:
        assert ensure_sandbox_user(name) == "created"
        entry = pwd.getpwnam(name)
        assert entry.pw_uid != 0
        assert entry.pw_gid != 0
        assert entry.pw_shell.endswith("nologin")
        assert not os.path.exists(entry.pw_dir)
        assert ensure_sandbox_user(name) == "exists"  # idempotent: init may run again
        identity = sandbox_identity(name)
        assert (identity.uid, identity.gid, identity.drop) == (entry.pw_uid, entry.pw_gid, True)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@as_root
def test_a_root_server_drops_to_the_sandbox_user_and_never_to_root() -> None:
    identity = sandbox_identity()
    assert identity.drop
    assert identity.uid == pwd.getpwnam(SANDBOX_USER).pw_uid != 0
    with pytest.raises(SandboxUnavailable, match="refusing to run partner code as root"):
        sandbox_identity("root")
    with pytest.raises(SandboxUnavailable, match="does not exist"):
        sandbox_identity("no-such-sandbox-user")


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the unprivileged server's path")
def test_an_unprivileged_server_needs_no_sandbox_user() -> None:
    assert ensure_sandbox_user() == "not needed"
    identity = sandbox_identity("no-such-sandbox-user")
    assert not identity.drop
    assert identity.uid == os.getuid()
