"""GET /orders through the real app, on SQLite and PostgreSQL: newest first, filtered, in pages
whose cursor stays correct while orders keep arriving."""
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from orchestrator.api import create_api
from orchestrator.bootstrap import Orchestrator, bootstrap
from orchestrator.catalog import seed
from orchestrator.models import MIGRATIONS
from orchestrator.settings import Settings
from runtime.migrations import migrate
from tests.support.orders import order_body
from tests.support.redis_dbs import RedisDbs


@pytest.fixture(params=["sqlite", "postgresql"])
def orch(request: pytest.FixtureRequest, redis_dbs: RedisDbs,
         tmp_path: Path) -> Iterator[Orchestrator]:
    url = (f"sqlite:///{tmp_path}/orchestrator.db" if request.param == "sqlite"
           else request.getfixturevalue("make_pg_database")())
    with redis_dbs.lend() as redis_url:
        orchestrator = bootstrap(Settings(database_url=url, redis_url=redis_url))
        migrate(url, MIGRATIONS)
        seed(orchestrator.db.sessions)
        yield orchestrator
        orchestrator.db.dispose()


@pytest.fixture
def api(orch: Orchestrator) -> Iterator[TestClient]:
    with TestClient(create_api(orch), raise_server_exceptions=False) as client:
        yield client


def place(api: TestClient, count: int) -> list[str]:
    return [api.post("/orders", json=order_body(email=f"list{n}@example.com")).json()["id"]
            for n in range(count)]


def every_page(api: TestClient, limit: int, **query) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        params = {**query, "limit": limit, **({"cursor": cursor} if cursor else {})}
        body = api.get("/orders", params=params).json()
        pages.append([o["id"] for o in body["orders"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_orders_come_newest_first_in_pages_without_their_timelines(api: TestClient) -> None:
    placed = place(api, 7)
    pages = every_page(api, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [o for p in pages for o in p] == placed[::-1]
    first = api.get("/orders", params={"limit": 1}).json()["orders"][0]
    assert "steps" not in first and first["status"] == "pending"


def test_orders_placed_between_two_pages_shift_nothing(api: TestClient) -> None:
    placed = place(api, 5)
    first = api.get("/orders", params={"limit": 2}).json()
    place(api, 3)  # newer than everything already listed
    rest = every_page_from(api, first["next_cursor"], 2)
    assert [o["id"] for o in first["orders"]] + rest == placed[::-1]


def every_page_from(api: TestClient, cursor: str, limit: int) -> list[str]:
    seen = []
    while cursor:
        body = api.get("/orders", params={"limit": limit, "cursor": cursor}).json()
        seen += [o["id"] for o in body["orders"]]
        cursor = body["next_cursor"]
    return seen


def test_filters_by_status_and_attention(api: TestClient, orch: Orchestrator) -> None:
    placed = place(api, 4)
    with orch.db.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = 'failed', needs_attention = :yes "
                          "WHERE id = :id"), {"id": placed[1], "yes": True})
    assert every_page(api, 10, status="failed") == [[placed[1]]]
    assert every_page(api, 10, needs_attention="true") == [[placed[1]]]
    assert every_page(api, 10, status="pending") == [[placed[3], placed[2], placed[0]]]
    assert every_page(api, 10, status="cancelled") == [[]]


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 201}, {"status": "lost"},
                                   {"cursor": "not-a-cursor"}, {"needs_attention": "maybe"}])
def test_a_bad_query_is_a_422_naming_it(api: TestClient, query: dict) -> None:
    response = api.get("/orders", params=query)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(query))]
