"""A worker that is alive but consumes nothing (here: its consumer cancelled over the broker,
as a wedged consumer would look) stops itself once messages wait on its queue, and its
supervisor starts a fresh one; the order waiting there completes, charged once."""
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.orders import order_body, wait_terminal
from tests.support.redis_dbs import RedisDbs


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDbs, mail: MailDropServer,
           free_port: Callable[[], int]) -> Iterator[Stack]:
    with redis_dbs.lend() as redis_url:
        env = {"REDIS_URL": redis_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
               "WORKER_STALL_S": "3"}
        with Stack(tmp_path_factory.mktemp("watchdog"), env=env, api_port=free_port()) as stack:
            stack.wait_ready(timeout=90)
            yield stack


def test_a_worker_whose_consumer_stalls_is_restarted_and_the_order_completes(
        system: Stack) -> None:
    with httpx.Client(base_url=system.api_url, timeout=30) as api:
        first = api.post("/orders", json=order_body()).json()["id"]
        assert wait_terminal(api, first)["status"] == "confirmed"
        assert system.supervisor.restarts["payment"] == 0
        # the payment worker stays up and connected, and takes nothing from its queue
        subprocess.run([sys.executable, "-m", "celery", "-b", system.env["REDIS_URL"], "control",
                        "cancel_consumer", "payment", "-t", "5"], check=True, capture_output=True)
        order_id = api.post("/orders", json=order_body()).json()["id"]
        order = wait_terminal(api, order_id, timeout=90)
    assert order["status"] == "confirmed"
    assert system.supervisor.restarts["payment"] >= 1
    assert [s["name"] for s in order["steps"]].count("payment.authorize") == 1
