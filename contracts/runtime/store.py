"""Database plumbing every service uses the same way: engine settings, the inbox that makes a
step idempotent, the dead-letter table, and running Alembic migrations."""
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import (JSON, DateTime, Engine, MetaData, String, Text, TypeDecorator,
                        create_engine, event, pool)
from sqlalchemy.orm import Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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


def reader(engine: Engine) -> Engine:
    """The same pool, for sessions that only read (a plain BEGIN on SQLite)."""
    return engine.execution_options(readonly=True)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps come back timezone-aware in UTC on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class InboxMixin:
    """One row per (order, step) handled, written in the same transaction as the step's effect:
    a redelivered message finds it and returns the stored outcome instead of acting twice."""

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class DeadLetterMixin:
    """A message this service could not process, kept with its error so it can be re-driven."""

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    retried_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


def migrate(url: str, script_location: Path, revision: str = "head") -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["url"] = url
    command.upgrade(cfg, revision)


def revision(script_location: Path, message: str) -> None:
    """Autogenerate a new revision by diffing the models against a scratch SQLite at head."""
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/scratch.db"
        migrate(url, script_location)
        cfg = Config()
        cfg.set_main_option("script_location", str(script_location))
        cfg.attributes["url"] = url
        command.revision(cfg, message=message, autogenerate=True)


def downgrade(url: str, script_location: Path, revision: str = "base") -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["url"] = url
    command.downgrade(cfg, revision)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # migrations stay plain SQLAlchemy: they must not import our code, which will change
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(metadata: MetaData) -> None:
    """The body of every service's migrations/env.py (online mode only: we migrate live DBs)."""
    url = context.config.attributes["url"]
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=url.startswith("sqlite"), render_item=_render_item)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
