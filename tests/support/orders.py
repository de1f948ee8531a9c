"""Orders as a user sees them: the HTTP body, the order's end, its e-mail."""
import time
from pathlib import Path
from typing import Any

import httpx

from devstack.smtp import read_mails
from tests.support.waiting import wait_for

TERMINAL = {"confirmed", "failed", "cancelled"}


def order_body(sku: str = "BOOK-1", quantity: int = 1, token: str = "tok_visa",
               email: str = "ada@example.com") -> dict[str, Any]:
    return {"customer_email": email, "items": [{"sku": sku, "quantity": quantity}],
            "payment_token": token}


def wait_terminal(api: httpx.Client, order_id: str, timeout: float = 60) -> dict[str, Any]:
    def terminal() -> dict[str, Any] | None:
        order: dict[str, Any] = api.get(f"/orders/{order_id}").json()
        return order if order["status"] in TERMINAL else None
    result: dict[str, Any] = wait_for(terminal, timeout, what=f"order {order_id} to end")
    return result


def mails_for(maildir: Path, order_id: str) -> list[Any]:
    return [m for m in read_mails(maildir) if order_id in str(m["Subject"])]


def wait_mail(maildir: Path, order_id: str, timeout: float = 30) -> Any:
    return wait_for(lambda: mails_for(maildir, order_id), timeout, what=f"mail for {order_id}")[0]


def step_names(order: dict[str, Any], status: str | None = None) -> list[str]:
    return [s["name"] for s in order["steps"] if status is None or s["status"] == status]


# The most a POST may take whatever the broker is doing: the API never waits on it. Far below
# the 30-60 s a request hung for before, and loose enough for a busy machine.
POST_BOUND_S = 3.0


def place_promptly(api: httpx.Client, count: int, tag: str) -> list[str]:
    """`count` orders, each answered 202 within POST_BOUND_S (a fault may be going on)."""
    placed, slowest = [], 0.0
    for index in range(count):
        started = time.monotonic()
        response = api.post("/orders", json=order_body(email=f"{tag}{index}@example.com"))
        slowest = max(slowest, time.monotonic() - started)
        assert response.status_code == 202, response.text
        placed.append(str(response.json()["id"]))
    assert slowest < POST_BOUND_S, f"a POST took {slowest:.1f}s during the fault"
    return placed
