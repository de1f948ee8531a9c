"""The saga's load client, run by the bench in its own process (its own GIL, away from the
embedded SMTP server's thread).

Every order goes through HTTP: `POST /orders` with `tok_visa`, `time.time()` taken just before.
*When* an order became confirmed is not found by polling GET /orders/{id}, which would load the
API being measured: a watcher reads the orchestrator's own `orders` table (one indexed,
read-only query for every order still pending, every 2 ms when one order is in flight, every
5-25 ms under load) and stamps each order at the midpoint between the last look that saw it
pending and the first that did not; so a stamp is within half an interval of the commit that a
GET would first have shown. *That* every order has ended (its e-mail too) is learnt from the
broker (every queue empty, nothing unacked); then each order is read once through the API
(GET /orders/{id}), which is what decides its final status and gives its step timeline.

The bench's plain contenders (bench/plain_api.py: the hand-rolled chain, DBOS) are driven the
same way: the same POSTs, the same watcher on their own `orders` table, the same final GET (their
orders have no timeline: a terminal status is their end).

    python -m bench.load burst --api URL --broker URL --db URL --orders N --concurrency C --out FILE
    python -m bench.load sequential --api URL --broker URL --db URL --orders N --out FILE
    python -m bench.load paced --api URL --broker URL --db URL --rate R --seconds S --out FILE
"""
import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import uvloop
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from bench import cpu
from bench.broker_looks import Looks

LAST_STEP = {"confirmed": "notify.order_confirmed", "failed": "notify.order_failed"}
CHUNK = 500  # ids per query
# who is being driven, for the progress lines (--label: the saga, or a plain contender)
LABEL = ["saga"]


def order_body(sku: str) -> dict[str, Any]:
    return {"customer_email": "a@example.com", "items": [{"sku": sku, "quantity": 1}],
            "payment_token": "tok_visa"}


class Watcher:
    """When each order was first seen no longer pending in the orchestrator's database."""

    QUERY = "SELECT id, status FROM orders WHERE status != 'pending' AND id IN ({marks})"

    def __init__(self, database_url: str) -> None:
        # the driver's own connection, outside SQLAlchemy: the looks are the client's busiest
        # work after the POSTs, and all they need is one plain query
        self.engine = create_engine(database_url, poolclass=NullPool)
        self.raw = self.engine.raw_connection()
        if self.engine.dialect.name == "postgresql":
            driver = self.raw.driver_connection
            assert driver is not None  # None only once a connection is invalidated
            driver.autocommit = True  # each look sees the latest commits
        # (sqlite3 opens no transaction for a SELECT: each look reads the latest commits)
        self.mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self.pending: dict[str, float] = {}  # order id -> when its POST was answered
        self.seen: dict[str, float] = {}
        self.last_look = time.time()

    def add(self, order_id: str) -> None:
        self.pending[order_id] = time.time()

    def look(self) -> None:
        previous, ids = self.last_look, list(self.pending)
        self.last_look = time.time()
        found: list[tuple[str, str]] = []
        cursor = self.raw.cursor()
        try:
            for index in range(0, len(ids), CHUNK):
                chunk = ids[index:index + CHUNK]
                cursor.execute(self.QUERY.format(marks=",".join([self.mark] * len(chunk))), chunk)
                found += cursor.fetchall()
        finally:
            cursor.close()
        ended = time.time()
        for order_id, _status in found:
            # pending at the previous look (or when it was posted), done by the end of this one
            since = max(previous, self.pending.pop(order_id))
            self.seen[order_id] = (since + ended) / 2

    def interval(self) -> float:
        return 0.005 if len(self.pending) <= 50 else 0.025

    async def run(self) -> None:
        while True:
            if self.pending:
                self.look()
            else:
                self.last_look = time.time()
            await asyncio.sleep(self.interval())

    def close(self) -> None:
        self.raw.close()
        self.engine.dispose()


def wait_idle(looks: Looks, timeout: float, every: float = 0.05, what: str = "") -> None:
    """Until the broker has been idle on two looks in a row (a message in the instant between
    BRPOP and the unacked hash would fool one look; the GETs that follow catch the rest)."""
    deadline = time.monotonic() + timeout
    idle_looks, last_report = 0, time.monotonic()
    while idle_looks < 2:
        left = looks.busy()
        idle_looks = idle_looks + 1 if left == 0 else 0
        if time.monotonic() > deadline:
            raise RuntimeError(f"the saga's queues still hold {left} message(s) "
                               f"after {timeout:g} s")
        if what and time.monotonic() - last_report > 2:
            last_report = time.monotonic()
            print(f"  {LABEL[0]}: {what}: {left} message(s) in flight", flush=True)
        time.sleep(every)


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def ended(order: dict[str, Any]) -> bool:
    """Terminal, and its last e-mail step reported: the saga has nothing left to do. A plain
    contender's order (bench/plain_api.py) has no timeline: its last step sets the status."""
    last = LAST_STEP.get(order["status"])
    if last is None or "steps" not in order:
        return last is not None
    return any(s["name"] == last and s["status"] == "succeeded" for s in order["steps"])


def summary(order: dict[str, Any], posted: dict[str, Any], confirmed: float | None
            ) -> dict[str, Any]:
    steps = {s["name"]: timestamp(s["at"]) for s in order.get("steps", [])
             if s["status"] == "succeeded"}
    return {**posted, "status": order["status"], "created": timestamp(order["created_at"]),
            "confirmed": confirmed, "steps": steps}


class Progress:
    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.done, self.last = total, what, 0, time.monotonic()

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.done == self.total or now - self.last > 2:
            self.last = now
            print(f"  {LABEL[0]}: {self.done}/{self.total} {self.what}", flush=True)


async def post(client: httpx.AsyncClient, body: dict[str, Any], watcher: Watcher
               ) -> dict[str, Any]:
    started, clock = time.time(), time.perf_counter()
    response = await client.post("/orders", json=body)
    took = time.perf_counter() - clock
    if response.status_code != 202:
        raise RuntimeError(f"POST /orders answered {response.status_code}: {response.text[:300]}")
    order_id = response.json()["id"]
    watcher.add(order_id)
    return {"id": order_id, "start": started, "post_s": took}


async def post_many(clients: Sequence[httpx.AsyncClient], n: int, body: dict[str, Any],
                    watcher: Watcher) -> list[dict[str, Any]]:
    """POST n orders from as many concurrent clients as given, each on its own connection."""
    results: list[dict[str, Any]] = []
    progress = Progress(n, "orders posted")
    remaining = iter(range(n))

    async def one_client(client: httpx.AsyncClient) -> None:
        for _ in remaining:  # shared iterator: each index is taken by exactly one client
            results.append(await post(client, body, watcher))
            progress.step()

    await asyncio.gather(*(one_client(client) for client in clients))
    return results


async def read_all(client: httpx.AsyncClient, posted: list[dict[str, Any]], watcher: Watcher,
                   concurrency: int, timeout: float) -> list[dict[str, Any]]:
    """GET every order once; those not ended yet again after a pause."""
    pending = {p["id"]: p for p in posted}
    done: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    gate = asyncio.Semaphore(concurrency)

    async def read(order_id: str) -> dict[str, Any]:
        async with gate:
            for attempt in range(3):
                try:
                    response = await client.get(f"/orders/{order_id}")
                    break
                except httpx.RemoteProtocolError:
                    # a kept-alive connection the server closed as we reused it (seen once in
                    # a 10,000-order run); a GET is safe to send again
                    if attempt == 2:
                        raise
            response.raise_for_status()
            return dict(response.json())

    while pending:
        orders = await asyncio.gather(*(read(order_id) for order_id in pending))
        for order in orders:
            if ended(order):
                done.append(summary(order, pending.pop(order["id"]), watcher.seen.get(order["id"])))
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} order(s) not ended after {timeout:g} s, "
                                   f"e.g. {next(iter(pending))}")
            await asyncio.sleep(0.2)
    return done


def http_client(api: str, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=api, limits=limits, timeout=120, trust_env=False)


@asynccontextmanager
async def posting_clients(api: str, concurrency: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client with a pool of one connection per concurrent poster: httpcore looks at every
    connection of its pool for each request, which with one shared pool of 16 cost the load
    driver more than the POST itself. Made before a measurement starts (each one builds an SSL
    context, even for plain HTTP)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(http_client(api, 1)) for _ in range(concurrency)]


# An order still pending while the broker has had nothing queued or unacked for this long is
# lost: no message will move it any more (a plain contender's task that raised, with nothing to
# retry it). The saga's sweeper would drive one again, but only after its step deadline (120 s).
LOST_AFTER_S = 15.0


async def until_seen(watcher: Watcher, broker: Looks, timeout: float) -> list[str]:
    """Until no order the watcher follows is pending; returns those that never will be (lost)."""
    deadline, idle_since = time.monotonic() + timeout, None
    while watcher.pending:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"{len(watcher.pending)} order(s) still pending after {timeout:g} s")
        if broker.busy():
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since > LOST_AFTER_S:
            lost = sorted(watcher.pending)
            print(f"  {LABEL[0]}: {len(lost)} order(s) LOST: still pending, nothing in flight for "
                  f"{LOST_AFTER_S:g} s, e.g. {lost[0]}", flush=True)
            watcher.pending.clear()
            return lost
        await asyncio.sleep(0.01 if idle_since is None else 0.2)
    return []


async def run_burst(args: argparse.Namespace, watcher: Watcher) -> dict[str, Any]:
    broker = looks(args)
    watched = cpu.parse_watch(args.watch)
    looking = asyncio.create_task(watcher.run())
    async with http_client(args.api, args.concurrency) as client, \
            posting_clients(args.api, args.concurrency) as posters:
        before, calls = cpu.snapshot(watched), broker.calls()
        posted = await post_many(posters, args.orders, order_body(args.sku), watcher)
        lost = await until_seen(watcher, broker, args.timeout)
        looking.cancel()
        # blocking on purpose: nothing else runs in this loop meanwhile
        wait_idle(broker, args.timeout, what="waiting for the orders to end")
        cpu_s = cpu.used(before, cpu.snapshot(watched))
        # the idle checks' own LLEN/HLEN are left out by the caller
        calls_after = broker.calls()
        orders = await read_all(client, [p for p in posted if p["id"] not in lost], watcher,
                                args.concurrency, args.timeout)
    return {"orders": orders, "lost": lost, "cpu_s": cpu_s,
            "broker_ops": {k: v - calls.get(k, 0) for k, v in calls_after.items()},
            "broker_ops_unit": broker.unit}


async def run_paced(args: argparse.Namespace, watcher: Watcher) -> dict[str, Any]:
    """Open loop: one POST every 1/rate s whatever the answers do, as customers would."""
    broker = looks(args)
    n = max(1, round(args.rate * args.seconds))
    progress = Progress(n, f"orders posted at {args.rate:g}/s")
    looking = asyncio.create_task(watcher.run())
    async with http_client(args.api, args.concurrency) as client:
        async def one() -> dict[str, Any]:
            posted = await post(client, order_body(args.sku), watcher)
            progress.step()
            return posted

        begin, tasks = time.perf_counter(), []
        for index in range(n):
            delay = begin + index / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        posted = list(await asyncio.gather(*tasks))
        lost = await until_seen(watcher, broker, args.timeout)
        looking.cancel()
        wait_idle(broker, args.timeout, what="waiting for the orders to end")
        orders = await read_all(client, [p for p in posted if p["id"] not in lost], watcher,
                                args.concurrency, args.timeout)
    return {"orders": orders, "lost": lost, "rate": args.rate}


async def run_sequential(args: argparse.Namespace, watcher: Watcher) -> dict[str, Any]:
    """One order at a time; the next once the previous one has ended, its e-mail included."""
    broker = looks(args)
    orders, lost = [], []
    progress = Progress(args.orders, "orders one at a time")
    deadline = time.monotonic() + args.timeout
    async with http_client(args.api, 1) as client:
        for _ in range(args.orders):
            posted = await post(client, order_body(args.sku), watcher)
            idle_since = None
            while watcher.pending:
                time.sleep(0.002)
                watcher.look()
                now = time.monotonic()
                if now > deadline:
                    raise RuntimeError(f"order {posted['id']} still pending")
                idle_since = None if broker.busy() else idle_since or now
                if idle_since is not None and now - idle_since > LOST_AFTER_S:
                    print(f"  {LABEL[0]}: order {posted['id']} LOST", flush=True)
                    lost.append(posted["id"])
                    watcher.pending.clear()
            wait_idle(broker, args.timeout, every=0.002)
            if not lost or lost[-1] != posted["id"]:
                orders += await read_all(client, [posted], watcher, 1, args.timeout)
            progress.step()
    return {"orders": orders, "lost": lost}


def looks(args: argparse.Namespace) -> Looks:
    return Looks(args.broker, args.sentinel_master, args.rabbit_node)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    watcher = Watcher(args.db)
    try:
        command = {"burst": run_burst, "sequential": run_sequential, "paced": run_paced}
        return await command[args.command](args, watcher)
    finally:
        watcher.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("burst", "sequential", "paced"):
        p = sub.add_parser(name)
        if name == "paced":
            p.add_argument("--rate", type=float, required=True, help="orders per second")
            p.add_argument("--seconds", type=float, required=True)
        p.add_argument("--api", required=True)
        p.add_argument("--broker", required=True, help="its URL (BROKER_URL)")
        p.add_argument("--sentinel-master", default=None)
        p.add_argument("--rabbit-node", default=None, help="rabbitmqctl's -n, if not the local")
        p.add_argument("--db", required=True, help="the orchestrator's database (read only)")
        p.add_argument("--orders", type=int, default=0)
        p.add_argument("--concurrency", type=int, default=1)
        p.add_argument("--sku", default="BOOK-1")
        p.add_argument("--timeout", type=float, default=300)
        p.add_argument("--watch", default="", metavar="NAME=PID,...",
                       help="report the CPU these processes (and this one) use until the "
                            "orders end")
        p.add_argument("--label", default="saga", help="for the progress lines")
        p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    LABEL[0] = args.label
    result = uvloop.run(run(args))  # the loop the API runs on too: less CPU per request
    with open(args.out, "w") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
