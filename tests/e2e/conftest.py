"""The whole system as real processes (API, saga worker, three services) on a real Redis and
SQLite, with a real SMTP server of its own so a test can take it down."""
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.smtp import MailDropServer, read_mails
from devstack.stack import Stack

TERMINAL = {"confirmed", "failed"}


def redis_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture(scope="session")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailDropServer]:
    with MailDropServer(tmp_path_factory.mktemp("e2e-mail")) as server:
        yield server


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory, redis_url: str, mail: MailDropServer,
           free_port: Callable[[], int]) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("e2e-var")
    env = {
        "REDIS_URL": redis_db(redis_url, 3),
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
        # fast backoff so retries finish within a test, same code paths as production
        "PAYMENT_RETRY_BACKOFF_S": "0.05", "GATEWAY_TIMEOUT_MS": "20",
        "NOTIFY_RETRY_BACKOFF_S": "0.2",
        **{f"{name.upper()}_DATABASE_URL": f"sqlite:///{var}/{name}.db"
           for name in ("orchestrator", "payment", "inventory", "notify")},
    }
    with Stack(var, env=env, api_port=free_port()) as stack:
        stack.wait_ready(timeout=90)
        yield stack


@pytest.fixture(scope="session")
def api(system: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.api_url, timeout=30) as client:
        yield client


def order_body(sku: str = "BOOK-1", quantity: int = 1, token: str = "tok_visa",
               email: str = "ada@example.com") -> dict[str, Any]:
    return {"customer_email": email, "items": [{"sku": sku, "quantity": quantity}],
            "payment_token": token}


def wait_for(check: Callable[[], Any], timeout: float = 60, every: float = 0.1,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def wait_terminal(api: httpx.Client, order_id: str, timeout: float = 60) -> dict[str, Any]:
    def terminal() -> dict[str, Any] | None:
        order = api.get(f"/orders/{order_id}").json()
        return order if order["status"] in TERMINAL else None
    return wait_for(terminal, timeout, what=f"order {order_id} to end")


def mails_for(maildir: Path, order_id: str) -> list[Any]:
    return [m for m in read_mails(maildir) if order_id in str(m["Subject"])]


def wait_mail(maildir: Path, order_id: str, timeout: float = 30) -> Any:
    return wait_for(lambda: mails_for(maildir, order_id), timeout, what=f"mail for {order_id}")[0]


def step_names(order: dict[str, Any], status: str | None = None) -> list[str]:
    return [s["name"] for s in order["steps"] if status is None or s["status"] == status]
