"""Dependency direction: domain packages never pull in the web framework or the server; the import contracts
of pyproject.toml's [tool.importlinter] (import-linter) hold: the edges (CLI, app, HTTP, background tasks,
demo) above the domain services, dataspace.context imported by the edges only, the standalone libraries
below the server, the SDK without the server, no cycles inside the packages nor between the server's packages."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_every_import_contract_has_an_id():
    ids = [c.get("id") for c in CONTRACTS]
    assert all(ids), "give every [[tool.importlinter.contracts]] an id (the test below selects by it)"
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("contract", [c["id"] for c in CONTRACTS])
def test_import_contract_is_kept(contract):
    # The venv's lint-imports, run from the repository root: it reads pyproject.toml and imports nothing.
    done = subprocess.run(
        [str(LINT_IMPORTS), "--contract", contract, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
