"""SoftHSM2 tokens for the PKCS#11 key tests: a pool initialised in a temporary directory per test session
(``SOFTHSM2_CONF``), before the module is loaded (SoftHSM reads its token directory once per process).

Each test takes a token of its own, so key labels never collide between tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4321-test-pin"
POOL = 64


class TokenPool:
    def __init__(self, labels: list[str]) -> None:
        self._labels = labels

    def take(self) -> str:
        if not self._labels:
            raise RuntimeError("SoftHSM token pool exhausted; raise POOL")
        return self._labels.pop()


_pool: TokenPool | None = None


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> TokenPool:
    """The process's token pool. Test modules import this fixture, and pytest then runs it once per module:
    the pool is made once per process (SoftHSM reads its configuration once per process anyway)."""
    global _pool  # noqa: PLW0603
    if _pool is not None:
        return _pool
    if not Path(MODULE).exists() or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2; CI installs it)")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    os.environ["DATASPACE_TEST_PKCS11_PIN"] = PIN
    labels = [f"ds-test-{i}" for i in range(POOL)]
    for label in labels:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "12345678", "--pin", PIN],
            check=True,
            capture_output=True,
        )
    _pool = TokenPool(labels)
    return _pool
