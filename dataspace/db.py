"""Persistence: the declarative base, engines, and the unit of work.

Services receive a ``Session`` and never commit; the caller's ``Database.transaction()`` does, so a change,
its receipt and its audit entry are written together or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, DateTime, Engine, MetaData, Table, create_engine, event, insert, inspect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from dataspace.settings import normalize_database_url

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # Last in, first out: the busiest connection is reused, so psycopg's prepared statements (made on a
    # connection's 5th execution of a statement) are reused instead of parsed and planned on every checkout.
    kwargs.setdefault("pool_use_lifo", True)
    engine = create_engine(url, **kwargs)
    _ping_idle_connections(engine)
    return engine


# A connection unused for this long is pinged before it is handed out (see _ping_idle_connections).
PING_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Like ``pool_pre_ping``, but only for connections that sat idle: a connection back in use within
    ``PING_IDLE_SECONDS`` (a busy server's, handed out last-in-first-out) skips the round trip. A dead one
    is replaced before anyone sees it (the pool retries on ``DisconnectionError``); one that died less
    than a second ago fails its statement instead, and that error invalidates the pool's older
    connections, so the next checkout gets a fresh one."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < PING_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure of the ping means a dead connection
            raise DisconnectionError(str(exc)) from exc
        if not alive:
            raise DisconnectionError("the connection did not answer the ping")


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take control of it, and
    # start every transaction as IMMEDIATE so concurrent writers queue on the lock instead of failing
    # a read-to-write upgrade (no lost updates on the embedded database).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # The default 2 MB page cache makes every bulk insert into a large index (the ledger's millions of
        # entries) miss on most pages; 64 MB per connection is allocated only as pages are used.
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Read-only sessions begin DEFERRED (WAL readers never wait for the writer); statement reads (None) not
        # at all: the driver connection is already in autocommit mode (isolation_level None above).
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode is None:
            return
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An engine plus a session factory; ``transaction()`` is the unit of work."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalize_database_url(url)
        self.engine = make_engine(self.url, **engine_kwargs)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # Reads begin DEFERRED on SQLite (no write lock; see _configure_sqlite).
        self.read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        self.read_sessionmaker = sessionmaker(self.read_engine, expire_on_commit=False)
        # Statement reads: PostgreSQL in autocommit; SQLite without our BEGIN (SQLAlchemy's AUTOCOMMIT level on
        # pysqlite would hand the connection back with the driver's own implicit transactions switched on).
        statements = (
            self.engine.execution_options(sqlite_begin=None)
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self.autocommit_sessionmaker = sessionmaker(statements, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.sessionmaker() as session, session.begin():
            yield session

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reads (on SQLite it takes no write lock); the caller commits nothing through it."""
        with self.read_sessionmaker() as session:
            yield session

    @contextmanager
    def statement_reads(self) -> Iterator[Session]:
        """A session for reads whose every statement runs on its own (autocommit): no BEGIN and no ROLLBACK
        round trips. For a hot path that needs no snapshot across its statements; PostgreSQL's READ COMMITTED
        gives none across statements anyway. Nothing is written through it."""
        with self.autocommit_sessionmaker() as session:
            yield session

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    def dispose(self) -> None:
        self.engine.dispose()


def allocate_ids(session: Session, table: str, count: int) -> list[int]:
    """Reserve ``count`` primary keys for a bulk insert (within the caller's transaction).

    PostgreSQL draws them from the table's sequence (safe under concurrency); SQLite transactions hold the
    write lock from BEGIN IMMEDIATE, so ``max(id)`` cannot move under us.
    """
    if count <= 0:
        return []
    _check_identifiers(table, ("id",))
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, {int(count)})"  # noqa: S608
        ).all()
        return [int(r[0]) for r in rows]
    sql = f'SELECT COALESCE(MAX(id), 0) FROM "{table}"'  # noqa: S608
    start = int(conn.exec_driver_sql(sql).scalar_one()) + 1
    return list(range(start, start + count))


def bulk_insert(session: Session, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Insert many rows through the driver directly (COPY on PostgreSQL, executemany on SQLite).

    The ORM's per-row parameter processing dominated ingest time; this path is ~20x faster. Datetimes must
    be timezone-aware UTC; they are stored exactly as ``UTCDateTime`` stores them.
    """
    if not rows:
        return
    _check_identifiers(table, columns)
    conn = session.connection()
    cols = ", ".join(f'"{c}"' for c in columns)
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
        return
    dt_cols = [i for i, v in enumerate(rows[0]) if isinstance(v, datetime)]
    converted: list[tuple[Any, ...]] = rows
    if dt_cols:
        text_of: dict[datetime, str] = {}  # a batch usually shares one timestamp; format it once

        def fix(row: tuple[Any, ...]) -> tuple[Any, ...]:
            out = list(row)
            for i in dt_cols:
                value = out[i]
                if value is not None:
                    out[i] = text_of.get(value) or text_of.setdefault(value, _sqlite_datetime(value))
            return tuple(out)

        converted = [fix(row) for row in rows]
    placeholders = ", ".join("?" for _ in columns)
    cur = raw.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(f'INSERT INTO "{table}" ({cols}) VALUES ({placeholders})', converted)  # noqa: S608
    finally:
        cur.close()


def bulk_datetime(session: Session, value: datetime) -> Any:
    """``value`` as ``bulk_insert`` would store it on this session's database: a caller building millions of
    rows that share one timestamp converts it once instead of having every row converted."""
    return _sqlite_datetime(value) if session.connection().dialect.name == "sqlite" else value


def _sqlite_datetime(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DATETIME type writes and parses back.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _check_identifiers(table: str, columns: tuple[str, ...] = ()) -> None:
    """Table and column names are interpolated into SQL below: only known schema names pass."""
    known = Base.metadata.tables.get(table)
    if known is None or any(c not in known.c for c in columns):
        raise ValueError(f"unknown table or column for bulk SQL: {table} {columns}")


# Largest id a primary key column holds on every backend (PostgreSQL INTEGER). Ids from requests are
# validated against it at the edge, so an absurd id is a 422, never a database overflow.
MAX_ID = 2_147_483_647


# --- work held back to the end of a block ---------------------------------------------------------------
P = TypeVar("P")


@contextmanager
def held_back(session: Session, key: str, pending: P, release: Callable[[P], object]) -> Iterator[None]:
    """Keep ``pending`` in ``session.info[key]`` for the block, for writers to add to instead of writing at
    once, and ``release`` it when the block ends (still in the caller's transaction). If the block raises,
    nothing is released: the caller's transaction is failing anyway. A nested block joins the outermost
    one (its ``pending`` is dropped). Shared by the audit log's, the points' and the inserts' batching."""
    if key in session.info:
        yield
        return
    session.info[key] = pending
    try:
        yield
    finally:
        del session.info[key]
    release(pending)


# --- inserts held back to the end of a batch ------------------------------------------------------------
_DEFERRED = "deferred_inserts"


def insert_later(session: Session, table: Table, params: dict[str, Any]) -> None:
    """Insert one row into ``table``, now or, inside ``deferred_inserts``, with the other rows held back for
    that table in one multi-row INSERT when the block ends (still in the caller's transaction).

    For rows nothing reads back in the same transaction, or whose readers call ``flush_deferred`` first.
    Every row of one table must name the same columns; columns left out get their server default (Python
    defaults are not applied: a table whose left-out columns have one is inserted through SQLAlchemy)."""
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.get(_DEFERRED)
    if pending is None:
        _insert_rows(session.connection(), table, [params])
    else:
        pending.setdefault(table, []).append(params)


def insert_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], *, returning: tuple[str, ...] = ()
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` into ``table`` now, in multi-row INSERTs (see ``_insert_rows``); with ``returning``,
    those columns of every inserted row (in no promised order: match them by a unique key)."""
    if not rows:
        return []
    return _insert_rows(session.connection(), table, rows, returning=returning)


def deferred_rows(session: Session, table: Table) -> list[dict[str, Any]]:
    """The rows of ``table`` held back so far (empty outside ``deferred_inserts``): a reader checks whether
    what it is about to read is among them, and calls ``flush_deferred`` only then."""
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.get(_DEFERRED)
    return pending.get(table, []) if pending else []


def flush_deferred(session: Session) -> None:
    """Insert the held-back rows now (tables in the order first seen, rows in the order given)."""
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.get(_DEFERRED)
    if pending:
        _write_pending(session.connection(), pending)


def _write_pending(conn: Connection, pending: dict[Table, list[dict[str, Any]]]) -> None:
    for table, rows in pending.items():
        _insert_rows(conn, table, rows)
    pending.clear()


_ROWS_PER_INSERT = 500


def _insert_rows(
    conn: Connection, table: Table, rows: list[dict[str, Any]], *, returning: tuple[str, ...] = ()
) -> list[tuple[Any, ...]]:
    """One multi-row INSERT per ``_ROWS_PER_INSERT`` rows, straight to the driver with each column's bind
    processing (SQLAlchemy's own executemany costs twice the CPU for the few rows of a batch)."""
    columns = tuple(rows[0])
    back = [table.c[c] for c in returning]  # only the table's own columns
    if any(tuple(r) != columns for r in rows) or any(
        c.default is not None and c.name not in columns for c in table.columns
    ):
        # Uneven rows, or Python defaults to apply: the general path.
        if back:
            return [tuple(r) for r in conn.execute(insert(table).returning(*back), rows)]
        conn.execute(insert(table), rows)
        return []
    dialect = conn.dialect
    processors = [table.c[c].type._cached_bind_processor(dialect) for c in columns]
    quote = dialect.identifier_preparer.quote
    one = "(" + ", ".join(["%s" if dialect.name == "postgresql" else "?"] * len(columns)) + ")"
    # Identifiers are the table's own (table.c[c] above refused any other name), quoted; values are bound.
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES "  # noqa: S608
    tail = f" RETURNING {', '.join(quote(c.name) for c in back)}" if back else ""
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    out: list[tuple[Any, ...]] = []
    try:
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            values = [
                proc(row[c]) if proc is not None else row[c]
                for row in chunk
                for c, proc in zip(columns, processors, strict=True)
            ]
            sql = head + ", ".join([one] * len(chunk)) + tail
            try:
                cursor.execute(sql, values)
                if back:
                    out += [tuple(r) for r in cursor.fetchall()]
            except dialect.loaded_dbapi.Error as exc:
                # The driver's error, as SQLAlchemy's own path would raise it (IntegrityError, OperationalError
                # with its SQLSTATE...): callers and the group committer's retry test recognise it.
                raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()
    return out


def deferred_inserts(session: Session) -> AbstractContextManager[None]:
    """Hold back ``insert_later`` rows of this block and write them when it ends. If the block raises, they are
    dropped: the caller's transaction is failing anyway. Nested blocks join the outermost one."""
    return held_back(session, _DEFERRED, {}, lambda pending: _write_pending(session.connection(), pending))
