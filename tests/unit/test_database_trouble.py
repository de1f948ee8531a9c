"""Which database errors are an outage to wait out (runtime.db.database_trouble), on a real
SQLite file: a lock is; a missing table is a bug."""
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from runtime.db import database_trouble, make_engine


def error_of(engine, sql: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text(sql))
    return caught.value


def test_a_locked_database_is_trouble_that_passes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite", timeout_s=0.1)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert database_trouble(error_of(engine, "INSERT INTO t VALUES (1)"))
    finally:
        holder.rollback()
        holder.close()


def test_a_missing_table_or_a_bad_statement_is_a_bug(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    assert not database_trouble(error_of(engine, "SELECT * FROM nowhere"))
    assert not database_trouble(error_of(engine, "SELEKT 1"))
    assert not database_trouble(ValueError("not a database error at all"))
