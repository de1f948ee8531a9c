"""The one engine helper every process uses: SQLite tuned for many small write transactions,
PostgreSQL with a checked pool; timestamps that come back in UTC on both."""
import os
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, TypeDecorator, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import utcnow as utcnow  # one clock for the wire and the tables


def make_engine(url: str, timeout_s: float = 10.0) -> Engine:
    """`timeout_s` bounds every wait on the database (a lock, a connection, a host that drops
    packets): past it the caller gets an error (a 503 at the API, a retry in a worker) rather
    than a request or a worker that hangs."""
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                               pool_timeout=timeout_s, connect_args=postgres_bounds(timeout_s))
        event.listen(engine, "handle_error", _drop_confused_connections)
        return engine
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL + NORMAL: readers never block the writer and a commit costs no fsync.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # 512 KiB of page cache per connection (default 2 MiB): a pool of them otherwise grows
        # a long-running API by megabytes (measured by the benchmark's memory phase)
        cur.execute("PRAGMA cache_size=-512")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that later writes can fail
        # with "database is locked" instead of waiting its turn. Readers (see `reader`) don't.
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def _drop_confused_connections(context: Any) -> None:
    # A connection the server cut mid-protocol (a restart) can come back to the pool out of
    # step: psycopg then answers "unexpected result EMPTY_QUERY from command 'BEGIN'"
    # (InterfaceError) and, on the next checkout, refuses even the pre-ping ("can't change
    # 'autocommit' now", a ProgrammingError SQLAlchemy does not count as a disconnect). Either
    # way the connection is thrown away and a fresh one made, instead of failing a step.
    error = context.original_exception
    if context.is_pre_ping or (isinstance(error, context.dialect.loaded_dbapi.InterfaceError)
                               and "unexpected result" in str(error)):
        context.is_disconnect = True


def postgres_bounds(timeout_s: float) -> dict[str, Any]:
    """libpq's own bounds: connecting, a peer that stops answering (keepalives, and unacked data
    via tcp_user_timeout: a partition), a row lock. A statement may run longer (the sweeper's
    scan, a migration) but not for ever."""
    ms = int(timeout_s * 1000)
    return {"connect_timeout": max(1, round(timeout_s / 2)), "keepalives": 1,
            "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
            "tcp_user_timeout": ms,
            "options": f"-c lock_timeout={ms} -c statement_timeout={ms * 6}"}


# What passes: SQLite busy or locked; PostgreSQL's connection exceptions (class 08), an
# administrator or crash shutdown or a server still starting (57P01-57P03), too many connections
# (53300), a serialization failure or deadlock (40001, 40P01), a lock or statement timeout
# (55P03, 57014). Not a missing table, a syntax error, a full disk: those are for a person.
_SQLITE_PASSING = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_RECOVERY"}
_POSTGRES_PASSING = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03",
                     "57014")


def database_trouble(exc: BaseException) -> bool:
    """A database that is away, restarting, locked or too slow: trouble that passes, which a
    step waits out and the API answers with a 503. A bad statement, a missing table or a full
    disk is not: those fail as any bug does."""
    if isinstance(exc, SQLAlchemyTimeoutError):  # no connection free in the pool in time
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    driver_error = exc.orig
    errorname = getattr(driver_error, "sqlite_errorname", None)
    if errorname is not None:
        return errorname in _SQLITE_PASSING
    sqlstate = getattr(driver_error, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate).startswith(_POSTGRES_PASSING)
    # psycopg's own connection failures (refused, reset, timed out) carry no SQLSTATE
    return isinstance(exc, (OperationalError, InterfaceError))


def reader(engine: Engine) -> Engine:
    """The same pool, for sessions that only read (a plain BEGIN on SQLite)."""
    return engine.execution_options(readonly=True)


@dataclass(frozen=True)
class Database:
    """One process's database: its engine and session factories. Building one connects to
    nothing (SQLAlchemy connects on first use), so a composition root can build it eagerly."""

    engine: Engine
    sessions: "sessionmaker[Session]"
    read_sessions: "sessionmaker[Session]"

    @classmethod
    def at(cls, url: str, timeout_s: float = 10.0) -> "Database":
        engine = make_engine(url, timeout_s)
        # A prefork pool child must not reuse the connections its parent holds (the parent's
        # threads use them: the relay, the dead-letter reporter): the child starts with an
        # empty pool, leaving the parent's sockets to the parent (SQLAlchemy's "pooling and
        # multiprocessing" advice). Weak, so a disposed Database is not kept alive by it.
        held = weakref.ref(engine)
        os.register_at_fork(after_in_child=lambda: _forget(held))
        return cls(engine, sessionmaker(engine, expire_on_commit=False),
                   sessionmaker(reader(engine), expire_on_commit=False))

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    def dispose(self) -> None:
        self.engine.dispose()


def _forget(held: "weakref.ref[Engine]") -> None:
    engine = held()
    if engine is not None:
        engine.dispose(close=False)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps come back timezone-aware in UTC on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
