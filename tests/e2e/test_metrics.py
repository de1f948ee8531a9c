"""Metrics as Prometheus scrapes them: the API's /metrics and each worker's port, on a real
system (payment on prefork, so the samples of its pool children must be summed), with the
counts checked against orders placed through HTTP."""
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.monitoring import DASHBOARD, metric_names_in_dashboard, served_metric_names
from tests.support.orders import order_body, wait_terminal
from tests.support.redis_dbs import RedisDbs
from tests.support.waiting import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDbs, mail: MailDropServer,
           free_port: Callable[[], int]) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("metrics")
    with redis_dbs.lend() as redis_url:
        env = {"REDIS_URL": redis_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
               "PAYMENT_RETRY_BACKOFF_S": "0.05", "GATEWAY_TIMEOUT_MS": "20"}
        with Stack(var, env=env, api_port=free_port(), metrics_from=free_port(),
                   process_env={"payment": {"WORKER_POOL": "prefork",
                                            "WORKER_CONCURRENCY": "2"}}) as stack:
            stack.wait_ready(timeout=90)
            yield stack


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_the_api_and_every_worker_count_what_happened_to_the_orders(system: Stack) -> None:
    api = system.api_url
    before = scrape(f"{api}/metrics")
    with httpx.Client(base_url=api, timeout=30) as client:
        placed = [client.post("/orders", json=order_body(token=token, quantity=quantity,
                                                         sku=sku)).json()["id"]
                  for token, sku, quantity in [("tok_visa", "BOOK-1", 1),
                                               ("tok_gatewayFlaky", "BOOK-1", 1),
                                               ("tok_chargeDeclined", "BOOK-1", 1),
                                               ("tok_visa", "LIMITED-1", 50)]]
        ends = [wait_terminal(client, order_id) for order_id in placed]
    assert [(o["status"], o["reason"]) for o in ends] == [
        ("confirmed", None), ("confirmed", None), ("failed", "payment_declined"),
        ("failed", "out_of_stock")]

    # the e-mails of the failed ones go out after they fail: wait for the saga to hear them
    def settled() -> Samples | None:
        after = scrape(f"{api}/metrics")
        return after if value(after, "saga_orders_open") == 0 else None
    after = wait_for(settled, timeout=30, what="every saga to close")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("saga_orders_total", status="confirmed") == 2
    assert grew("saga_orders_total", status="failed", reason="payment_declined") == 1
    assert grew("saga_orders_total", status="failed", reason="out_of_stock") == 1
    assert grew("saga_order_seconds_count", status="confirmed") == 2
    assert grew("saga_order_seconds_count") == 4
    assert grew("saga_step_retries_total", step="payment.authorize") == 2  # the flaky gateway's
    assert grew("saga_compensations_total", step="payment.refund") == 1  # the stock ran out
    assert grew("saga_step_seconds_count", step="payment.authorize", outcome="succeeded") == 3
    assert grew("saga_step_seconds_count", step="inventory.reserve", outcome="failed") == 1
    assert grew("saga_step_seconds_count", step="notify.order_failed", outcome="succeeded") == 2
    assert {dict(ls)["queue"] for n, ls in after if n == "saga_queue_depth"} == {
        "saga", "payment", "inventory", "notify", "saga:replies"}
    assert value(after, "saga_orders_needing_attention") == 0
    assert value(after, "saga_outbox_owed") == 0
    assert grew("http_request_duration_seconds_count", handler="/orders", method="POST") == 4
    assert grew("http_request_duration_seconds_count", handler="/orders/{order_id}",
                method="GET") >= 4

    workers = {name: scrape(url) for name, url in system.metrics_urls.items()}
    assert set(workers) == {"saga", "payment", "inventory", "notify"}
    payment = workers["payment"]  # prefork: the pool children's samples, summed
    assert value(payment, "saga_worker_messages_received_total", task="payment.authorize") >= 4
    assert value(payment, "saga_worker_task_seconds_count", task="payment.authorize") >= 6
    assert value(payment, "saga_worker_retries_total", task="payment.authorize") == 2
    assert value(workers["inventory"], "saga_worker_task_seconds_count",
                 task="inventory.reserve", outcome="succeeded") >= 3
    assert value(workers["saga"], "saga_worker_task_seconds_count",
                 task="saga.step_result") >= 4
    assert value(workers["notify"], "saga_worker_connection_losses_total") == 0

    # every metric the Grafana dashboard draws is one the system serves (a family with no
    # sample yet, as the dead letters here, counts: it is declared)
    served = set().union(*(served_metric_names(httpx.get(url, timeout=10).text)
                           for url in (f"{api}/metrics", system.metrics_urls["payment"])))
    assert metric_names_in_dashboard(DASHBOARD) - served == set()
