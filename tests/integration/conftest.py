"""Each service's domain against a real database: SQLite and PostgreSQL, migrated by Alembic."""
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from contracts.runtime.store import make_engine, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    make_pg_database = request.getfixturevalue("make_pg_database")
    return make_pg_database()


@pytest.fixture
def migrated(db_url: str) -> Iterator[Callable[[Path], sessionmaker]]:
    """`migrated(MIGRATIONS)`: the service's schema at head, and a session factory on it."""
    engines = []

    def make(migrations: Path) -> sessionmaker:
        migrate(db_url, migrations)
        engine = make_engine(db_url)
        engines.append(engine)
        return sessionmaker(engine, expire_on_commit=False)

    yield make
    for engine in engines:
        engine.dispose()
