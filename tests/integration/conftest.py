"""Each service's domain against a real database: SQLite and PostgreSQL, migrated by Alembic;
and each worker as a real process on a Redis DB of its test's own."""
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devstack.supervisor import Supervisor
from runtime.db import make_engine
from runtime.migrations import migrate
from tests.support.paths import ROOT

ServiceWorker = Callable[..., tuple[dict[str, str], Supervisor]]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    make_pg_database = request.getfixturevalue("make_pg_database")
    url: str = make_pg_database()
    return url


@pytest.fixture
def migrated(db_url: str) -> Iterator[Callable[[Path], "sessionmaker[Session]"]]:
    """`migrated(MIGRATIONS)`: the service's schema at head, and a session factory on it."""
    engines = []

    def make(migrations: Path) -> "sessionmaker[Session]":
        migrate(db_url, migrations)
        engine = make_engine(db_url)
        engines.append(engine)
        return sessionmaker(engine, expire_on_commit=False)

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def service_worker(redis_db: str, tmp_path: Path) -> Iterator[ServiceWorker]:
    """`service_worker("payment", db_url, **env)`: that service migrated and its real worker
    process consuming its queue on this test's own Redis DB; returns (env, supervisor)."""
    supervisor = Supervisor(log_dir=tmp_path / "log", cwd=ROOT)

    def start(service: str, database_url: str, **extra: str) -> tuple[dict[str, str], Supervisor]:
        env = {"REDIS_URL": redis_db, "PYTHONPATH": str(ROOT),
               f"{service.upper()}_DATABASE_URL": database_url, **extra}
        module = f"services.{service}"
        supervisor.run_once("migrate", [sys.executable, "-m", module, "migrate"], env)
        supervisor.add(service, [sys.executable, "-m", module, "worker", "-c", "2"], env,
                       restart=False)
        return env, supervisor

    yield start
    supervisor.stop()
