"""Outages that hang rather than refuse: a broker that takes the bytes and answers nothing
(SIGSTOP, as a frozen or partitioned host). The whole system runs for real on a redis-server of
its own, so pausing it disturbs no other test."""
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.orders import mails_for, order_body, place_promptly, wait_terminal
from tests.support.waiting import wait_for

HANG_S = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mail: MailDropServer,
          free_port: Callable[[], int]) -> Iterator[Stack]:
    env = {"REDIS_URL": "",  # an embedded redis-server of this module's own, to pause
           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
           "ORCHESTRATOR_RELAY_INTERVAL_S": "0.5", "ORCHESTRATOR_RELAY_GRACE_S": "1",
           "PAYMENT_RETRY_BACKOFF_S": "0.05", "GATEWAY_TIMEOUT_MS": "20"}
    with Stack(tmp_path_factory.mktemp("hangs"), env=env, api_port=free_port()) as system:
        system.wait_ready(timeout=90)
        yield system


def test_orders_taken_while_the_broker_hangs_all_complete_once_it_is_back(
        stack: Stack, mail: MailDropServer) -> None:
    broker = stack.redis
    assert broker is not None
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        before = api.post("/orders", json=order_body()).json()["id"]
        wait_terminal(api, before)  # the system works, and every worker is connected
        broker.pause()
        try:
            placed = place_promptly(api, 6, "hang-")
            assert api.get(f"/orders/{placed[0]}").json()["status"] == "pending"
            health = api.get("/healthz")
            assert health.status_code == 503
            assert health.json()["database"] == "ok"
            assert health.json()["broker"].startswith("unreachable")
            # past every bound (socket timeouts, kombu's BRPOP health check at ~21 s): each
            # worker notices, drops its connection and reconnects by itself
            time.sleep(HANG_S)
        finally:
            broker.resume()
        for order_id in placed:
            assert wait_terminal(api, order_id, timeout=90)["status"] == "confirmed"
            wait_for(lambda o=order_id: mails_for(mail.maildir, o), 30, what="its e-mail")
        time.sleep(2)  # a duplicate e-mail would come now
        assert all(len(mails_for(mail.maildir, o)) == 1 for o in placed)
        assert api.get("/healthz").status_code == 200
