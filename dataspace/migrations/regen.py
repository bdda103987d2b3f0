"""Regenerate the initial migration from the models (used while the schema has never shipped).

python -m dataspace.migrations.regen
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from dataspace.db import make_engine
from dataspace.migrations import HERE, alembic_config


def main() -> None:
    versions = HERE / "versions"
    for old in versions.glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'empty.db'}")
        command.revision(alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001")
        engine.dispose()
    for new in versions.glob("0001_*.py"):
        print(new)


if __name__ == "__main__":
    main()
