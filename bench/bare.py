"""The baseline: a bare Celery chain of three trivial tasks on the saga's three queues.

Same app settings (`runtime.celery_app.make_app`: json, acks_late, prefetch 1, routing by
namespace, the same transport), same worker command line (pool, concurrency, no gossip/mingle,
INFO logging), same Redis: only the saga's work is missing (no database, no replies, no API).
The last task pushes `(chain id, time.time())` onto a Redis list, which is how the driver learns
that a chain has finished and when.

    python -m bench.bare worker QUEUE          # one worker (started by the bench, three of them)
    python -m bench.bare burst|sequential ...  # the drivers, run by the bench in a subprocess
"""
import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any, cast

import redis
from celery import Celery, chain
from celery.signals import after_setup_logger

from bench import cpu
from runtime.celery_app import make_app, quiet_celery_task_lines
from runtime.headers import brief

QUEUES = ("payment", "inventory", "notify")
TASKS = tuple(f"{queue}.bench_step" for queue in QUEUES)  # routed by namespace, like the saga's
DONE_KEY = "bench:bare:done"
# about what an order's message carries from step to step
PAYLOAD = {"order": {"customer_email": "a@example.com", "items": [{"sku": "BOOK-1", "quantity": 1}],
                     "total_cents": 1299, "currency": "EUR"}, "payment_token": "tok_visa"}


def broker_url() -> str:
    return os.environ["REDIS_URL"]


@cache
def done_client() -> redis.Redis:
    return redis.Redis.from_url(broker_url())


class Unkept:
    """The bare chain has no database to keep dead letters in (runtime.deadletters would load
    SQLAlchemy into Celery's floor): what its transport cannot decode is only printed."""

    def record(self, task: str, order_id: str | None, payload: Any, error: str) -> None:
        print(f"bare: dead letter not kept task={task} error={error}", file=sys.stderr)

    store = record


def build_app() -> Celery:
    app = make_app("bare", broker_url(), Unkept())

    @app.task(name=TASKS[0])
    def payment_step(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.task(name=TASKS[1])
    def inventory_step(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.task(name=TASKS[2])
    def notify_step(payload: dict[str, Any]) -> dict[str, Any]:
        done_client().rpush(DONE_KEY, json.dumps([payload["id"], time.time()]))
        return payload

    return app


def bare_chain(app: Celery, chain_id: str) -> Any:
    payload = {**PAYLOAD, "id": chain_id}
    # named in argsrepr like the saga's messages: the baseline pays none of the saga's savings
    first, *rest = (app.signature(name, queue=queue, **brief(chain_id))
                    for name, queue in zip(TASKS, QUEUES, strict=True))
    first["args"] = (payload,)  # what `first.args = ...` does (celery-types: read-only)
    return chain(first, *rest)


# -- drivers -------------------------------------------------------------------------------------

def sequential(app: Celery, client: redis.Redis, n: int, _: dict[str, int]) -> dict[str, Any]:
    """One chain at a time: publish, wait for its end, next."""
    results: list[dict[str, Any]] = []
    for index in range(n):
        chain_id = uuid.uuid4().hex
        started = time.time()
        bare_chain(app, chain_id).apply_async()
        done_id, ended = _pop(client, timeout=30)
        if done_id != chain_id:
            raise RuntimeError(f"expected chain {chain_id} to end, got {done_id}")
        results.append({"id": chain_id, "start": started, "end": ended})
        _progress(index + 1, n, "chains one at a time")
    return {"chains": results}


def burst(app: Celery, client: redis.Redis, n: int, watched: dict[str, int]) -> dict[str, Any]:
    """Publish n chains as fast as one thread can, then wait for every one to end."""
    before, calls = cpu.snapshot(watched), cpu.redis_calls(client)
    starts: dict[str, float] = {}
    for _ in range(n):
        chain_id = uuid.uuid4().hex
        starts[chain_id] = time.time()
        bare_chain(app, chain_id).apply_async()
    results: list[dict[str, Any]] = []
    while len(results) < n:
        done_id, ended = _pop(client, timeout=60)
        results.append({"id": done_id, "start": starts.pop(done_id), "end": ended})
        _progress(len(results), n, "chains of the burst done")
    cpu_s = cpu.used(before, cpu.snapshot(watched))
    calls_after = cpu.redis_calls(client)
    return {"chains": results, "cpu_s": cpu_s,
            "redis_calls": {k: v - calls.get(k, 0) for k, v in calls_after.items()}}


def _pop(client: redis.Redis, timeout: float) -> tuple[str, float]:
    # redis-py types BLPOP's reply as a list (or an Awaitable of one); on a timeout it is None
    item = cast(list[bytes] | None, client.blpop([DONE_KEY], timeout=timeout))
    if item is None:
        raise RuntimeError(f"no chain ended within {timeout:g} s: are the bare workers running?")
    done_id, ended = json.loads(item[1])
    return str(done_id), float(ended)


_last_progress = [0.0]


def _progress(done: int, total: int, what: str) -> None:
    now = time.monotonic()
    if done == total or now - _last_progress[0] > 2:
        _last_progress[0] = now
        print(f"  bare: {done}/{total} {what}", flush=True)


# -- command line --------------------------------------------------------------------------------

def work(app: Celery, queue: str, pool: str, concurrency: int) -> None:
    """Consume `queue` until the worker shuts down. (celery-types declares worker_main NoReturn,
    but it returns once the worker stops: main() goes on to `return 0`.)"""
    # the services' worker command line and logging (runtime/cli.py), queue for
    # queue: Celery's own two INFO lines per task quieted as in the saga's workers
    after_setup_logger.connect(quiet_celery_task_lines, weak=False)
    app.worker_main(["worker", "-Q", queue, "-n", f"bare-{queue}@%h",
                     "--pool", pool, "-c", str(concurrency), "-l", "INFO",
                     "--without-gossip", "--without-mingle"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="consume one of the queues (REDIS_URL)")
    worker.add_argument("queue", choices=QUEUES)
    worker.add_argument("--pool", default=os.environ.get("WORKER_POOL", "threads"))
    worker.add_argument("--concurrency", "-c", type=int,
                        default=int(os.environ.get("WORKER_CONCURRENCY", 8)))
    for name in ("burst", "sequential"):
        driver = sub.add_parser(name, help=f"drive chains ({name}); results as JSON to --out")
        driver.add_argument("--chains", type=int, required=True)
        driver.add_argument("--watch", default="", metavar="NAME=PID,...",
                            help="report the CPU these processes (and this one) use")
        driver.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    app = build_app()
    if args.command == "worker":
        work(app, args.queue, args.pool, args.concurrency)
        return 0
    client = redis.Redis.from_url(broker_url())
    client.delete(DONE_KEY)
    drive = burst if args.command == "burst" else sequential
    results = drive(app, client, args.chains, cpu.parse_watch(args.watch))
    with open(args.out, "w") as out:
        json.dump(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
