"""The API when its database is locked, away or broken: a JSON 503 with Retry-After that the
client can repeat with its Idempotency-Key, or a JSON 500 whose error id is in the log; never
plain text. Through the real app on SQLite and PostgreSQL."""
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from orchestrator import orders
from orchestrator.api import create_api
from orchestrator.bootstrap import bootstrap
from orchestrator.catalog import seed
from orchestrator.models import MIGRATIONS
from orchestrator.settings import Settings
from runtime.migrations import migrate
from tests.support.orders import order_body
from tests.support.redis_dbs import RedisDbs


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/orchestrator.db"
    url: str = request.getfixturevalue("make_pg_database")()
    return url


@pytest.fixture
def client(db_url: str, redis_dbs: RedisDbs) -> Iterator[TestClient]:
    with redis_dbs.lend() as redis_url:
        # a short bound, so that a locked database answers within the test
        orch = bootstrap(Settings(database_url=db_url, redis_url=redis_url,
                                  database_timeout_s=0.5))
        migrate(db_url, MIGRATIONS)
        seed(orch.db.sessions)
        with TestClient(create_api(orch), raise_server_exceptions=False) as test_client:
            yield test_client
        orch.db.dispose()


@contextmanager
def writers_locked_out(db_url: str) -> Iterator[None]:
    """Another client holds the lock every order's insert needs, and lets reads through."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.split(":///", 1)[1], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn = psycopg.connect(make_url(db_url).set(drivername="postgresql")
                               .render_as_string(hide_password=False))
        conn.execute("LOCK TABLE orders IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def test_a_locked_database_is_a_503_the_client_can_repeat(client: TestClient,
                                                          db_url: str) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    placed = client.post("/orders", json=order_body()).json()["id"]
    with writers_locked_out(db_url):
        refused = client.post("/orders", json=order_body(), headers=key)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/json"
        assert int(refused.headers["retry-after"]) > 0
        assert "try again" in refused.json()["detail"] and refused.json()["error_id"]
        assert client.get(f"/orders/{placed}").status_code == 200  # reads go on
    first = client.post("/orders", json=order_body(), headers=key)
    again = client.post("/orders", json=order_body(), headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]  # one order, however often it was sent


def test_a_database_that_is_away_is_a_503(redis_dbs: RedisDbs) -> None:
    with redis_dbs.lend() as redis_url:
        # nothing listens there: refused at once
        orch = bootstrap(Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/x",
                                  redis_url=redis_url, database_timeout_s=0.5))
        with TestClient(create_api(orch), raise_server_exceptions=False) as client:
            response = client.post("/orders", json=order_body())
            assert response.status_code == 503, response.text
            assert response.json()["error_id"]
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["database"].startswith("unreachable")
            # a scrape then says so (JSON, a 503) rather than report made-up numbers
            scrape = client.get("/metrics")
            assert scrape.status_code == 503 and scrape.json()["error_id"]


def test_an_unexpected_error_is_a_json_500_whose_id_is_in_the_log(
        client: TestClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")
    monkeypatch.setattr(orders, "place", broken)
    with caplog.at_level(logging.ERROR, logger="saga.api"):
        response = client.post("/orders", json=order_body())
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error_id = response.json()["error_id"]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)
