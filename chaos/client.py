"""Customers: orders posted through HTTP at a steady pace, each with its own Idempotency-Key so
a POST that failed mid-way can be retried without ever placing the order twice."""
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from chaos.plan import Order


def place_all(api_url: str, orders: list[Order], over_s: float, threads: int = 8) -> list[str]:
    interval = over_s / max(len(orders), 1)
    started = time.monotonic()
    with httpx.Client(base_url=api_url, timeout=30) as http, \
            ThreadPoolExecutor(max_workers=threads) as pool:
        def place(index: int) -> str:
            time.sleep(max(0.0, started + index * interval - time.monotonic()))
            return _post(http, orders[index], index)
        return list(pool.map(place, range(len(orders))))


def _post(http: httpx.Client, order: Order, index: int) -> str:
    body = {"customer_email": f"customer{index}@example.com", "payment_token": order.token,
            "items": [{"sku": order.sku, "quantity": order.quantity}]}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    for _attempt in range(30):
        try:
            response = http.post("/orders", json=body, headers=key)
            if response.status_code == 202:
                return str(response.json()["id"])
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError(f"order {index} could not be placed")


def statuses(api_url: str, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        return {order_id: http.get(f"/orders/{order_id}").json() for order_id in order_ids}
