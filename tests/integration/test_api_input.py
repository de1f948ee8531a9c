"""Bad input at the HTTP door: every one is a 4xx with a JSON body naming the field, never a 500
from the database (PostgreSQL refuses a NUL in text that SQLite stores). Through the real app,
migrated and seeded, on SQLite and on PostgreSQL."""
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from orchestrator.api import create_api
from orchestrator.bootstrap import Orchestrator, bootstrap
from orchestrator.catalog import seed
from orchestrator.models import MIGRATIONS
from orchestrator.settings import Settings
from runtime.migrations import migrate
from tests.support.redis_dbs import RedisDbs


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def orchestrator(request: pytest.FixtureRequest, redis_dbs: RedisDbs,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    """The orchestrator on a migrated, seeded database of its own: one per backend."""
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path_factory.mktemp('api')}/orchestrator.db"
    else:
        db_url = request.getfixturevalue("make_pg_database")()
    with redis_dbs.lend() as redis_url:
        orch = bootstrap(Settings(database_url=db_url, redis_url=redis_url))
        migrate(db_url, MIGRATIONS)
        seed(orch.db.sessions)
        yield orch
        orch.db.dispose()


@pytest.fixture(scope="module")
def client(orchestrator: Orchestrator) -> Iterator[TestClient]:
    with TestClient(create_api(orchestrator), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def queries(orchestrator: Orchestrator) -> Iterator[list[str]]:
    """Every SQL statement the app runs from here on."""
    seen: list[str] = []
    engine = orchestrator.db.engine

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def body(sku: str = "BOOK-1", token: str = "tok_visa", email: str = "ada@example.com",
         quantity: int = 1) -> dict[str, Any]:
    return {"customer_email": email, "items": [{"sku": sku, "quantity": quantity}],
            "payment_token": token}


def locs(response: Any) -> list[list[Any]]:
    detail = response.json()["detail"]
    assert all({"loc", "msg", "type"} <= set(error) for error in detail), detail
    return [error["loc"] for error in detail]


@pytest.mark.parametrize("payload,field", [
    (body(sku="BOOK\x00-1"), ["body", "items", 0, "sku"]),
    (body(sku="\x00"), ["body", "items", 0, "sku"]),
    (body(sku="BOOK-1\n"), ["body", "items", 0, "sku"]),
    (body(sku="BOOK-\x7f"), ["body", "items", 0, "sku"]),
    (body(sku="BOOK-\x85"), ["body", "items", 0, "sku"]),
    (body(sku="B" * 65), ["body", "items", 0, "sku"]),
    (body(sku="\ud800"), ["body", "items", 0, "sku"]),
    (body(token="tok_\x00visa"), ["body", "payment_token"]),
    (body(token="tok_visa\x00"), ["body", "payment_token"]),
    (body(token="tok\tvisa"), ["body", "payment_token"]),
    (body(token="t" * 65), ["body", "payment_token"]),
    (body(token=""), ["body", "payment_token"]),
    (body(email="ada\x00@example.com"), ["body", "customer_email"]),
    (body(email="ada@example.com\x00"), ["body", "customer_email"]),
    (body(email="\x00"), ["body", "customer_email"]),
    (body(email="Ada\x00 <ada@example.com>"), ["body", "customer_email"]),
    (body(sku="NOPE-1"), ["body", "items", 0, "sku"]),
    (body(quantity=0), ["body", "items", 0, "quantity"]),
])
def test_bad_input_is_a_422_naming_the_field(client, payload, field):
    # json.dumps escapes what httpx would refuse to encode (a lone surrogate) as \\uXXXX
    response = client.post("/orders", content=json.dumps(payload),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in locs(response)


def test_a_nul_inside_a_quoted_display_name_never_reaches_the_database(client):
    # the address is what is kept: "Ada\0" <ada@example.com> is ada@example.com
    response = client.post("/orders", json=body(email='"Ada\x00" <ada@example.com>'))
    assert response.status_code == 202, response.text
    assert response.json()["customer_email"] == "ada@example.com"


def test_a_token_of_64_characters_is_accepted(client):
    response = client.post("/orders", json=body(token="t" * 64))
    assert response.status_code == 202, response.text


def test_a_valid_order_is_still_accepted(client):
    # The publish to Redis may succeed or not: the outbox keeps the message either way.
    response = client.post("/orders", json=body(quantity=2))
    assert response.status_code == 202, response.text
    order = response.json()
    assert response.headers["location"] == f"/orders/{order['id']}"
    assert (order["status"], order["total_cents"]) == ("pending", 2598)
    again = client.get(f"/orders/{order['id']}")
    assert again.status_code == 200 and again.json()["id"] == order["id"]


@pytest.mark.parametrize("order_id", [
    "abc%00def", "%00", "no-such-order", "abc%01def", "%C3%A9", "%ED%A0%80", "%FF",
    str(uuid.uuid4()).upper(), "{" + str(uuid.uuid4()) + "}", str(uuid.uuid4()).replace("-", ""),
    "x" * 500,
])
def test_an_id_that_cannot_exist_is_a_404_without_a_query(client, queries, order_id):
    response = client.get(f"/orders/{order_id}")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"].startswith("no order ")
    assert not [q for q in queries if "orders" in q], queries


def test_an_unknown_uuid_is_a_404_from_the_database(client, queries):
    order_id = str(uuid.uuid4())
    response = client.get(f"/orders/{order_id}")
    assert response.status_code == 404 and order_id in response.json()["detail"]
    assert [q for q in queries if "orders" in q]


def test_health_reaches_the_database_and_the_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"database": "ok", "broker": "ok"}
