"""Dependency direction: domain packages never pull in the web framework or the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = ["consent", "sandbox", "policies"]
NO_WEB = [
    "dataspace.catalog.service",
    "dataspace.ingest.service",
    "dataspace.subjects.store",
    "dataspace.vault",
    "dataspace.keys",
    "dataspace.db",
]


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_import_neither_server_nor_web(package):
    loaded = _modules_after_import(package)
    assert not {m for m in loaded if m.split(".")[0] in ("dataspace", "fastapi", "starlette")}


@pytest.mark.parametrize("module", NO_WEB)
def test_services_do_not_import_the_web_framework(module):
    loaded = _modules_after_import(module)
    assert "fastapi" not in loaded
    assert "starlette" not in loaded
