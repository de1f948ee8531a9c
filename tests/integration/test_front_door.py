"""The API's front door (orchestrator/front_door.py) through the real app: bearer keys, the
body limit (declared lengths and chunked bodies), and validation errors that echo only a
prefix of what was sent."""
import itertools
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from orchestrator.api import create_api
from orchestrator.bootstrap import bootstrap
from orchestrator.catalog import seed
from orchestrator.models import MIGRATIONS
from orchestrator.settings import Settings
from runtime.migrations import migrate
from tests.support.orders import order_body
from tests.support.redis_dbs import RedisDbs
from tests.support.waiting import wait_for

KEYS = "first-key-0123456789,second-key-9876543210"


@pytest.fixture
def client_with(redis_dbs: RedisDbs, tmp_path: Path) -> Iterator:
    """`client_with(**settings)`: the API on a migrated database of its own."""
    numbers = itertools.count()
    with ExitStack() as opened:
        def make(**settings) -> TestClient:
            url = f"sqlite:///{tmp_path}/orchestrator-{next(numbers)}.db"
            redis_url = opened.enter_context(redis_dbs.lend())
            orch = bootstrap(Settings(database_url=url, redis_url=redis_url, **settings))
            migrate(url, MIGRATIONS)
            seed(orch.db.sessions)
            client = opened.enter_context(TestClient(create_api(orch),
                                                     raise_server_exceptions=False))
            client.redis_url = redis_url  # type: ignore[attr-defined]  # for a test to read
            return client
        yield make


def test_with_keys_set_every_endpoint_but_the_probes_needs_one(client_with) -> None:
    client = client_with(api_keys=KEYS)
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic x"}):
        refused = client.get("/orders/00000000-0000-0000-0000-000000000000", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["detail"].startswith("a valid API key is needed")
        assert client.post("/orders", json=order_body(), headers=headers).status_code == 401
    assert client.get("/healthz").status_code in (200, 503)  # a probe needs no key
    for key in KEYS.split(","):
        answered = client.get("/orders/00000000-0000-0000-0000-000000000000",
                              headers={"Authorization": f"Bearer {key}"})
        assert answered.status_code == 404  # through the door: there is no such order


def test_without_keys_the_api_stays_open(client_with) -> None:
    assert client_with().post("/orders", json=order_body()).status_code == 202


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(client_with) -> None:
    client = client_with(max_body_bytes=2000)
    big = {**order_body(), "customer_email": "a" * 3000 + "@example.com"}
    declared = client.post("/orders", json=big)
    assert declared.status_code == 413 and "over 2000 bytes" in declared.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: transfer-encoding chunked
        yield b'{"customer_email": "'
        for _ in range(100):
            yield b"a" * 100
    streamed = client.post("/orders", content=chunked(),
                           headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/orders", json=order_body()).status_code == 202  # under it: taken


def test_a_validation_error_echoes_only_a_prefix_of_the_input(client_with) -> None:
    client = client_with()
    sent = "S" * 5000
    response = client.post("/orders", json=order_body(sku=sent))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["input"] == "S" * 64 + "…"
    assert len(response.content) < 1000


def test_orders_are_shed_with_a_503_while_the_first_queue_is_too_deep(client_with) -> None:
    client = client_with(max_queue_depth=3)
    assert client.post("/orders", json=order_body()).status_code == 202  # starts the reader
    broker = redis.Redis.from_url(client.redis_url)
    broker.lpush("payment", *[b"queued"] * 4)  # no worker runs: the backlog only grows

    def shed() -> httpx.Response | None:
        response = client.post("/orders", json=order_body())
        return response if response.status_code == 503 else None
    refused = wait_for(shed, timeout=10, what="orders to be shed")
    assert int(refused.headers["retry-after"]) > 0
    assert "too many orders waiting" in refused.json()["detail"]
    broker.delete("payment")
    wait_for(lambda: client.post("/orders", json=order_body()).status_code == 202,
             timeout=10, what="orders to be taken again")


def test_the_openapi_document_names_every_status_with_its_json_body(client_with) -> None:
    spec = client_with().get("/openapi.json").json()
    expected = {("/orders", "post"): {"202", "401", "409", "413", "422", "500", "503"},
                ("/orders", "get"): {"200", "401", "413", "422", "500", "503"},
                ("/orders/{order_id}", "get"): {"200", "401", "404", "413", "500", "503"},
                ("/healthz", "get"): {"200", "500", "503"}}
    for (path, method), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert statuses <= set(responses), (path, method, sorted(responses))
        for status in statuses:
            assert "application/json" in responses[status]["content"], (path, status)
    assert spec["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
