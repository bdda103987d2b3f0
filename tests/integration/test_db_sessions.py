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


def test_a_duplicate_in_the_fast_insert_is_sqlalchemys_integrity_error(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        insert_rows(s, Partner.__table__, [_row("once")])  # type: ignore[arg-type]
    with pytest.raises(IntegrityError), ctx.db.transaction() as s:
        insert_rows(s, Partner.__table__, [_row("twice"), _row("once")])  # type: ignore[arg-type]
    with ctx.db.session() as s:
        assert sorted(s.scalars(select(Partner.key))) == ["once"]  # the failed statement left nothing
