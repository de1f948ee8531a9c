"""One trace per order: the real system exporting over OTLP/HTTP (payment on prefork, where each
pool child sets tracing up for itself) to a receiver of the test's own, and each order's spans
read back from it."""
from collections.abc import Callable, Iterator

import httpx
import pytest

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.orders import order_body, wait_mail, wait_terminal
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.redis_dbs import RedisDbs
from tests.support.waiting import wait_for

SERVICES = {"orchestrator-api", "saga", "payment", "inventory", "notify"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDbs, mail: MailDropServer,
           free_port: Callable[[], int], receiver: OtlpReceiver) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("traces")
    with redis_dbs.lend() as redis_url:
        env = {"REDIS_URL": redis_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_BSP_SCHEDULE_DELAY": "100"}  # export within a tenth of a second
        with Stack(var, env=env, api_port=free_port(),
                   process_env={"payment": {"WORKER_POOL": "prefork",
                                            "WORKER_CONCURRENCY": "2"}}) as stack:
            stack.wait_ready(timeout=90)
            yield stack


def trace_of(receiver: OtlpReceiver, order_id: str,
             runs: set[str]) -> tuple[set[str], list[ReceivedSpan]]:
    """Once every task in `runs` has a span about the order: the trace ids of the order's
    spans, and every span of those traces."""
    def ran() -> set[str] | None:
        about = [s for s in receiver.received() if s.attributes.get("order.id") == order_id]
        seen = {s.name.removeprefix("run/") for s in about if s.name.startswith("run/")}
        return {s.trace_id for s in about} if runs <= seen else None
    traces = wait_for(ran, timeout=30, what=f"the spans of {sorted(runs)}")
    return traces, [s for s in receiver.received() if s.trace_id in traces]


def db_system(span: ReceivedSpan) -> object:
    # the semantic conventions' older and newer name for it
    return span.attributes.get("db.system.name", span.attributes.get("db.system"))


def test_an_order_that_fails_and_is_compensated_is_one_trace_across_every_process(
        system: Stack, receiver: OtlpReceiver, mail: MailDropServer) -> None:
    with httpx.Client(base_url=system.api_url, timeout=30) as api:
        order_id = api.post("/orders", json=order_body(sku="LIMITED-1", quantity=50)).json()["id"]
        assert wait_terminal(api, order_id)["reason"] == "out_of_stock"
    wait_mail(mail.maildir, order_id)
    traces, spans = trace_of(receiver, order_id, {
        "payment.authorize", "inventory.reserve", "payment.refund", "notify.order_failed",
        "saga.step_result"})
    assert len(traces) == 1
    assert {s.service for s in spans} == SERVICES
    [post] = [s for s in spans if s.name == "POST /orders"]
    assert post.service == "orchestrator-api" and post.parent_id == ""  # the trace's root
    assert post.attributes["order.id"] == order_id
    # each step's run follows its message's publish; every span of a task carries the order id
    assert all(s.attributes.get("order.id") == order_id for s in spans if s.name.startswith(
        ("run/", "apply_async/")))
    ids = {s.span_id for s in spans}
    assert all(s.parent_id in ids for s in spans if s is not post)  # nothing orphaned
    # the maintained instrumentations: the services' SQL and the step guard's Redis commands
    assert "sqlite" in {db_system(s) for s in spans if s.service == "inventory"}
    assert "redis" in {db_system(s) for s in spans if s.service == "payment"}


def test_a_cancel_asked_later_joins_the_trace_of_the_order(system: Stack, receiver: OtlpReceiver,
                                                           mail: MailDropServer) -> None:
    with httpx.Client(base_url=system.api_url, timeout=30) as api:
        order_id = api.post("/orders", json=order_body()).json()["id"]
        assert wait_terminal(api, order_id)["status"] == "confirmed"
        wait_mail(mail.maildir, order_id)
        assert api.post(f"/orders/{order_id}/cancel").status_code == 202
        wait_for(lambda: api.get(f"/orders/{order_id}").json()["status"] == "cancelled",
                 timeout=30, what="the cancel")
    _, spans = trace_of(receiver, order_id, {
        "payment.authorize", "inventory.reserve", "notify.order_confirmed",
        "inventory.release", "payment.refund", "notify.order_cancelled"})
    # the cancel's request is a trace of its own, named for the order; what it set going is the
    # order's
    cancel = [s for s in receiver.received() if s.name == "POST /orders/{order_id}/cancel"
              and s.attributes.get("order.id") == order_id]
    assert len(cancel) == 1
    order_traces = {s.trace_id for s in spans if s.name.startswith("run/")}
    assert len(order_traces) == 1
    assert cancel[0].trace_id not in order_traces
