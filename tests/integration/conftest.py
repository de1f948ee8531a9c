"""Each service's domain against a real database: SQLite and PostgreSQL, migrated by Alembic."""
import base64
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service_worker(redis_url: str, tmp_path: Path):
    """`service_worker("payment", db_url, **env)`: that service migrated and its real worker
    process consuming its queue on a Redis DB of this test's own; returns (env, supervisor)."""
    import redis as redis_client

    from devstack.supervisor import Supervisor
    from tests.e2e.conftest import redis_db

    supervisor = Supervisor(log_dir=tmp_path / "log", cwd=ROOT)

    def start(service: str, database_url: str, **extra: str) -> tuple[dict[str, str], Supervisor]:
        env = {"REDIS_URL": redis_db(redis_url, 6), "PYTHONPATH": str(ROOT),
               f"{service.upper()}_DATABASE_URL": database_url, **extra}
        redis_client.Redis.from_url(env["REDIS_URL"]).flushdb()  # DB 6 is these tests' own
        module = f"services.{service}"
        supervisor.run_once("migrate", [sys.executable, "-m", module, "migrate"], env)
        supervisor.add(service, [sys.executable, "-m", module, "worker", "-c", "2"], env,
                       restart=False)
        return env, supervisor

    yield start
    supervisor.stop()


def saga_replies(client: Any, into: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Pop the replies waiting on queue `saga` (Celery's envelope: a base64 JSON body) into
    `into`, by order id."""
    while (raw := client.rpop("saga")) is not None:
        reply = json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
        into.setdefault(reply["order_id"], []).append(reply)
    return into
