"""Customers: orders posted through HTTP at a steady pace, each with its own Idempotency-Key so
a POST that failed mid-way (a 503, a dropped connection) is repeated without ever placing the
order twice. Every answer's time is kept: the API promises to answer within a bound whatever
the broker or the database is doing."""
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.plan import Order

# The most a POST may take, faults or not: the API never waits on the broker, and a database
# that is away is a prompt 503 (its lock waits are bounded by ORCHESTRATOR_DATABASE_TIMEOUT_S).
POST_BOUND_S = 2.0


@dataclass
class Placing:
    order_ids: list[str] = field(default_factory=list)
    answers: list[tuple[float, int]] = field(default_factory=list)  # (seconds, HTTP status)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def took(self, seconds: float, status: int) -> None:
        with self.lock:
            self.answers.append((seconds, status))

    @property
    def slowest_s(self) -> float:
        return round(max((s for s, _ in self.answers), default=0.0), 2)

    @property
    def over_bound(self) -> int:
        return sum(1 for s, _ in self.answers if s > POST_BOUND_S)

    @property
    def refused(self) -> int:
        """Answers a client had to repeat (a 503 while the database was away, a dropped
        connection): the order was placed on a later try."""
        return sum(1 for _, status in self.answers if status != 202)


def place_all(api_url: str, orders: list[Order], over_s: float, placing: Placing,
              threads: int = 8) -> None:
    interval = over_s / max(len(orders), 1)
    started = time.monotonic()
    with httpx.Client(base_url=api_url, timeout=30) as http, \
            ThreadPoolExecutor(max_workers=threads) as pool:
        def place(index: int) -> str:
            time.sleep(max(0.0, started + index * interval - time.monotonic()))
            return _post(http, orders[index], index, placing)
        placing.order_ids.extend(pool.map(place, range(len(orders))))


def _post(http: httpx.Client, order: Order, index: int, placing: Placing) -> str:
    body = {"customer_email": f"customer{index}@example.com", "payment_token": order.token,
            "items": [{"sku": order.sku, "quantity": order.quantity}]}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    for _attempt in range(60):
        started = time.monotonic()
        try:
            response = http.post("/orders", json=body, headers=key)
            placing.took(time.monotonic() - started, response.status_code)
            if response.status_code == 202:
                return str(response.json()["id"])
            wait = float(response.headers.get("retry-after", 1))
        except httpx.TransportError:
            placing.took(time.monotonic() - started, 0)
            wait = 1.0
        time.sleep(min(wait, 2.0))
    raise RuntimeError(f"order {index} could not be placed")


def statuses(api_url: str, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        return {order_id: _get(http, order_id) for order_id in order_ids}


def _get(http: httpx.Client, order_id: str) -> dict[str, Any]:
    for _attempt in range(30):  # the database may be restarting
        response = http.get(f"/orders/{order_id}")
        if response.status_code == 200:
            result: dict[str, Any] = response.json()
            return result
        time.sleep(1)
    raise RuntimeError(f"GET /orders/{order_id}: {response.status_code} {response.text[:200]}")
