"""Shared fixtures. Every database test runs against SQLite AND PostgreSQL (real servers, no mocks).

Two ways to get a clean database:

- ``ctx``: a server context on emptied tables. For tests that commit, run a server or a worker, or open
  more than one session or connection (what they write must be visible to the others).
- ``session``: one session in a transaction that is rolled back after the test (its commits release
  savepoints). For tests that call services on one session only; nothing is emptied between them.

Factories for rows of every domain are in ``tests/factories/``.

PostgreSQL: ``DATASPACE_TEST_POSTGRES_URL`` (default: trust auth on 127.0.0.1, database ``test``); a fresh
database is created per test session and dropped afterwards. ``DATASPACE_TEST_BACKENDS=sqlite`` limits a
local run to SQLite; CI runs both.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataspace import migrations
from dataspace.context import Context
from dataspace.db import Database
from dataspace.keys import KeyRing
from dataspace.models import Base
from dataspace.settings import Settings

PG_ADMIN_URL = os.environ.get("DATASPACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = [b for b in os.environ.get("DATASPACE_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
# Job outcomes show to partners at once and with exact times in tests (servers started by tests inherit
# this); the release schedule's own tests set a real tick and hold (tests/integration/test_partner_channels.py).
os.environ.setdefault("DATASPACE_JOB_RELEASE_TICK_SECONDS", "0")
os.environ.setdefault("DATASPACE_JOB_RELEASE_HOLD_SECONDS", "0")
# The command line remembers verified checkpoints per log (clients.sdk._checkpoints): one fresh memory per
# test session, never the developer's own.
os.environ.setdefault("DATASPACE_STATE_DIR", tempfile.mkdtemp(prefix="dataspace-test-state-"))


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database for this test session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        db = Database(url)
        migrations.upgrade(db.engine)
        db.dispose()
        yield url
        return
    name = f"dataspace_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # survives a PG restart
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_url(name)
    db = Database(url)
    migrations.upgrade(db.engine)
    db.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


# The identity/serial sequences owned by a table that have handed out a value (``last_value`` is NULL while
# a sequence is as created or restarted), with their start values.
_USED_SEQUENCES = """
SELECT t.relname, quote_ident(n.nspname) || '.' || quote_ident(s.relname), ps.start_value FROM pg_class s
JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = s.relname
JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
JOIN pg_class t ON t.oid = d.refobjid
WHERE s.relkind = 'S' AND n.nspname = current_schema() AND ps.last_value IS NOT NULL
"""


def truncate_all(db: Database) -> None:
    """Every table empty, and on PostgreSQL every table's identity restarted (as ``TRUNCATE ... RESTART
    IDENTITY``)."""
    _dirty.discard(db.url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    if db.is_sqlite:
        with db.engine.begin() as conn:
            for name in tables:
                conn.execute(text(f'DELETE FROM "{name}"'))
        return
    # A TRUNCATE costs about 7 ms a table however few rows it holds, and CASCADE takes in every table with a
    # foreign key to one truncated: ~0.35 s per ctx test for the few rows a test leaves. Deleting the rows
    # of the tables that have any (children first) and restarting the sequences that were used leaves the
    # same state in a few ms.
    has_rows = " UNION ALL ".join(f"SELECT '{n}' WHERE EXISTS (SELECT 1 FROM \"{n}\")" for n in tables)
    try:
        with db.engine.begin() as conn:
            used = {n for (n,) in conn.execute(text(has_rows))}
            for name in tables:
                if name in used:
                    conn.execute(text(f'DELETE FROM "{name}"'))
            for table, sequence, start in conn.execute(text(_USED_SEQUENCES)).all():
                if table in tables:
                    conn.execute(text("SELECT setval(CAST(:s AS regclass), :v, false)"), {"s": sequence, "v": start})
    except IntegrityError:  # rows the foreign key order cannot delete (a cycle): the slow way
        with db.engine.begin() as conn:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in tables) + " RESTART IDENTITY CASCADE"))


# The controller every test server names on its receipts (the server refuses to start without one).
TEST_CONTROLLER = {
    "controller_name": "Lakeside Savings Bank Co., Ltd.",
    "controller_address": "88 Lakeside Avenue, Pudong, Shanghai 200120, China",
    "controller_email": "privacy@lakeside-bank.cn",
    "controller_phone": "+86 21 5555 0188",
    "controller_dpo": "Li Wen <dpo@lakeside-bank.cn>",
    "controller_jurisdiction": "CN",
}


def controller_env() -> dict[str, str]:
    """``TEST_CONTROLLER`` as the environment of a ``dataspace serve`` subprocess."""
    return {f"DATASPACE_{k.upper()}": v for k, v in TEST_CONTROLLER.items()}


@pytest.fixture(scope="session")
def keyring() -> KeyRing:
    return KeyRing.generate()


# Databases a test may have left rows in (``ctx`` tests commit; ``session`` tests roll back).
_dirty: set[str] = set()


@pytest.fixture
def ctx(database: Database, keyring: KeyRing, tmp_path: Path) -> Iterator[Context]:
    """A server context on a clean database (tables are emptied before the test)."""
    settings = Settings(data_dir=tmp_path, database_url=database.url, **TEST_CONTROLLER)
    context = Context(settings=settings, db=database, keys=keyring)
    truncate_all(database)
    _dirty.add(database.url)
    yield context
    context.stop_writes()


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    """One session on a clean database whose work is rolled back after the test, so nothing needs emptying.

    The session joins an outer transaction with ``create_savepoint``: a ``commit()`` in the test (or in the
    code it calls) releases a savepoint, a ``rollback()`` returns to the last one, and the outer transaction
    is rolled back at the end. Only this session sees what it writes: a test that needs another session, a
    server or a worker takes ``ctx``."""
    if database.url in _dirty:  # a ctx test before this one left its rows
        truncate_all(database)
    with database.engine.connect() as conn:
        outer = conn.begin()
        s = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield s
        finally:
            s.close()
            outer.rollback()


@pytest.fixture
def backend(database: Database) -> str:
    return database.engine.dialect.name
