"""Session fixtures for the whole suite: a Redis, a mail drop and PostgreSQL databases of our own.

Tests only ever touch servers and databases they started or created themselves: a developer's
Redis or PostgreSQL data is never flushed or dropped by running the suite. Each test directory is
a marker (`unit`, `integration`, `e2e`): `pytest -m unit` runs what needs no server at all.
"""
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from devstack.net import free_port as _free_port
from devstack.redis_server import EmbeddedRedis
from devstack.smtp import MailDropServer
from tests.support.compose import parsed_config
from tests.support.redis_dbs import RedisDbs

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TEST_DATABASE_PREFIX = "saga_test_"


@pytest.fixture(scope="session", autouse=True)
def no_broker_of_the_shell() -> Iterator[None]:
    """A BROKER_URL in the developer's shell would win over every test's own REDIS_URL (in
    every process the tests start): the suite chooses its brokers itself."""
    saved = {k: os.environ.pop(k) for k in ("BROKER_URL", "BROKER_SENTINEL_MASTER")
             if k in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """`free_port()` gives a local TCP port nothing listens on (also importable: devstack.net)."""
    return _free_port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL when set (a Redis you dedicate to tests), else a fresh embedded
    redis-server."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # the directory is the marker: a test's kind is where it lives, never a decorator to forget
    for item in items:
        kind = item.path.relative_to(item.config.rootpath / "tests").parts[0]
        if kind in ("unit", "integration", "e2e"):
            item.add_marker(kind)


@pytest.fixture(scope="session")
def redis_dbs(redis_url: str) -> RedisDbs:
    """The one place Redis DB numbers are handed out (`redis_dbs.lend()`): never by hand."""
    return RedisDbs(redis_url)


@pytest.fixture
def redis_db(redis_dbs: RedisDbs) -> Iterator[str]:
    """A Redis DB of this test's own, emptied: its URL."""
    with redis_dbs.lend() as url:
        yield url


@pytest.fixture(scope="session")
def maildrop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailDropServer]:
    """An SMTP server for the session; each mail becomes a file in `maildrop.maildir`."""
    with MailDropServer(tmp_path_factory.mktemp("mail")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A PostgreSQL login allowed to create databases; the tests that need it skip without one."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as error:  # any reason at all means "no usable PostgreSQL here"
        why = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        pytest.skip(f"PostgreSQL not reachable at {make_url(url)!r} "
                    f"(set TEST_POSTGRES_URL to run these tests): {why}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def make_pg_database(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """`make_pg_database()` creates an empty database and returns its SQLAlchemy URL.

    At the end of the session it drops exactly the databases it created, nothing else.
    """
    admin_url = make_url(postgres_admin_url)
    engine = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": 2})
    created: list[str] = []

    def make() -> str:
        name = TEST_DATABASE_PREFIX + secrets.token_hex(6)
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return admin_url.set(database=name).render_as_string(hide_password=False)

    yield make

    failures = []
    with engine.connect() as connection:
        for name in created:
            try:
                # FORCE: a worker a test left behind must not keep its database alive.
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as error:  # keep dropping the others, then report
                failures.append(f"{name}: {error}")
    engine.dispose()
    if failures:
        pytest.fail("could not drop test databases:\n" + "\n".join(failures))


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """docker-compose.yml as the real Compose binary parses it (every profile on)."""
    return parsed_config()


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose file's services, by name."""
    services: dict[str, dict[str, Any]] = config["services"]
    return services
