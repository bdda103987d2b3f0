"""The database's session kinds and its fast insert path, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from dataspace.context import Context
from dataspace.db import insert_rows, utcnow
from dataspace.partners.models import Partner


def _partners(session) -> int:
    return session.scalar(select(func.count()).select_from(Partner)) or 0


def _in_transaction(session) -> bool:
    driver = session.connection().connection.driver_connection
    if session.get_bind().dialect.name == "postgresql":
        return driver.info.transaction_status != 0  # psycopg's TransactionStatus.IDLE
    return bool(driver.in_transaction)


def _row(key: str) -> dict[str, object]:
    """Every column given: the driver-level multi-row INSERT (no SQLAlchemy defaults to apply)."""
    return {
        "key": key,
        "name": key.title(),
        "category": "insurer",
        "description": "",
        "i18n": {},
        "status": "active",
        "created_at": utcnow(),
    }


def test_statement_reads_hold_no_transaction_and_see_each_commit(ctx: Context) -> None:
    with ctx.db.statement_reads() as reads:
        before = _partners(reads)
        # Nothing is held open between statements: a writer is not held up by it, and the next statement
        # sees the commit (a deferred SQLite read transaction would still see its old snapshot).
        assert not _in_transaction(reads)
        with ctx.db.transaction() as s:
            insert_rows(s, Partner.__table__, [_row("late-arrival")])  # type: ignore[arg-type]
        assert _partners(reads) == before + 1
        assert not _in_transaction(reads)
    with ctx.db.session() as snapshot:  # the ordinary read session does hold a transaction
        _partners(snapshot)
        assert _in_transaction(snapshot)


def test_a_connection_back_from_statement_reads_commits_its_next_writes(ctx: Context) -> None:
    """The pooled connection a statement-read session used goes on to serve transactions that end when they
    commit: nothing of the reads' mode lingers (an implicit driver transaction would hold SQLite's write lock)."""
    for n in range(3):
        with ctx.db.statement_reads() as reads:
            _partners(reads)
        with ctx.db.transaction() as s:
            insert_rows(s, Partner.__table__, [_row(f"after-reads-{n}")])  # type: ignore[arg-type]
            driver = s.connection().connection.driver_connection
        if ctx.db.engine.dialect.name == "postgresql":
            assert driver.info.transaction_status == 0
            assert driver.autocommit is False
        else:
            assert not driver.in_transaction
            assert driver.isolation_level is None  # BEGIN stays ours (IMMEDIATE for writers)
    with ctx.db.session() as s:
        assert _partners(s) == 3


def test_a_duplicate_in_the_fast_insert_is_sqlalchemys_integrity_error(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        insert_rows(s, Partner.__table__, [_row("once")])  # type: ignore[arg-type]
    with pytest.raises(IntegrityError), ctx.db.transaction() as s:
        insert_rows(s, Partner.__table__, [_row("twice"), _row("once")])  # type: ignore[arg-type]
    with ctx.db.session() as s:
        assert sorted(s.scalars(select(Partner.key))) == ["once"]  # the failed statement left nothing


def test_the_fast_insert_returns_what_it_was_asked_for_of_every_row(ctx: Context) -> None:
    keys = [f"partner-{i}" for i in range(7)]
    back = insert_rows_now(ctx, [_row(k) for k in keys])
    with ctx.db.session() as s:
        stored = dict(s.execute(select(Partner.key, Partner.id)).all())
    assert sorted(back) == sorted((stored[k], k) for k in keys)


def insert_rows_now(ctx: Context, rows: list[dict[str, object]]) -> list[tuple]:
    with ctx.db.transaction() as s:
        return insert_rows(s, Partner.__table__, rows, returning=("id", "key"))  # type: ignore[arg-type]
