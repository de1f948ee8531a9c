"""The hand-rolled baseline: what an afternoon gives, `chain(validate_payment.s(),
update_inventory.s(), send_confirmation_email.s())` behind a FastAPI endpoint.

Plain Celery (`Celery(...)`, kombu's own Redis transport, nothing of the saga's runtime) with the
saga's basic settings: json, acks_late, prefetch 1, one queue per service (payment, inventory,
notify), the same pool, concurrency and broker. The API stores the order row and publishes the
chain inline; each task does its effect (bench/effects.py) and nothing more: no outbox, inbox,
guard, replies, saga worker or compensation; a task that fails leaves its order pending.
The last task sends the e-mail and then marks the order confirmed: "confirmed" here *is* "the
e-mail went out".

It gets the savings that are settings, not safety, as the bare chain does (bench/bare.py):
messages named in a short argsrepr, Celery's two INFO lines per task quieted, SQLite in WAL,
the SMTP connection kept.

    python -m bench.handrolled api --port P       # uvicorn, one process
    python -m bench.handrolled worker QUEUE       # one worker (the bench starts three)
"""
import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from celery import Celery, chain
from celery.signals import after_setup_logger
from sqlalchemy import Engine

from bench import effects
from bench.plain_api import make_api, serve

QUEUES = ("payment", "inventory", "notify")
# where each part keeps its data: like the saga's, one database per service
DATABASES = {"orders": "HANDROLLED_ORDERS_URL", "payment": "HANDROLLED_PAYMENT_URL",
             "inventory": "HANDROLLED_INVENTORY_URL"}

app = Celery("handrolled", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/4"),
             set_as_current=False)
app.conf.update(
    task_serializer="json", accept_content=["json"], result_backend=None,
    task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=1,
    task_routes={"payment.validate_payment": {"queue": "payment"},
                 "inventory.update_inventory": {"queue": "inventory"},
                 "notify.send_confirmation_email": {"queue": "notify"}},
    broker_connection_retry_on_startup=True, enable_utc=True,
)


def database(part: str) -> Engine:
    return effects.engine_from_env(DATABASES[part])


def mailer() -> effects.Mailer:
    return effects.mailer_from_env()


@app.task(name="payment.validate_payment")
def validate_payment(order: dict[str, Any]) -> dict[str, Any]:
    effects.authorize(database("payment"), order)
    return order


@app.task(name="inventory.update_inventory")
def update_inventory(order: dict[str, Any]) -> dict[str, Any]:
    effects.reserve(database("inventory"), order)
    return order


@app.task(name="notify.send_confirmation_email")
def send_confirmation_email(order: dict[str, Any]) -> dict[str, Any]:
    effects.confirm(database("orders"), mailer(), order)
    return order


def start(order: dict[str, Any]) -> None:
    """The chain, published inline by the request that stored the order."""
    # named in argsrepr like the saga's messages (otherwise Celery renders the payload into
    # every message's headers): a saving either side could make, so both make it
    named = {"argsrepr": f"(<order {order['id']}>,)", "kwargsrepr": "{}"}
    chain(validate_payment.signature((order,), options=named),
          update_inventory.signature(options=named),
          send_confirmation_email.signature(options=named)).apply_async()


def _quiet(**_: Any) -> None:
    # Celery's "received" and "succeeded" INFO lines, as quieted for the saga and the bare chain
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handrolled", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve POST /orders and GET /orders/{id}")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, required=True)
    worker = sub.add_parser("worker", help="consume one of the queues (REDIS_URL)")
    worker.add_argument("queue", choices=QUEUES)
    worker.add_argument("--pool", default=os.environ.get("WORKER_POOL", "threads"))
    worker.add_argument("--concurrency", "-c", type=int,
                        default=int(os.environ.get("WORKER_CONCURRENCY", 8)))
    args = parser.parse_args(argv)
    if args.command == "api":
        serve(make_api(database("orders"), start), args.host, args.port)
        return 0
    work(args.queue, args.pool, args.concurrency)
    return 0


def work(queue: str, pool: str, concurrency: int) -> None:
    """Consume `queue` until the worker stops (celery-types declares worker_main NoReturn, but
    it returns then)."""
    after_setup_logger.connect(_quiet, weak=False)
    # the saga's worker command line (runtime/cli.py)
    app.worker_main(["worker", "-Q", queue, "-n", f"handrolled-{queue}@%h", "--pool", pool,
                     "-c", str(concurrency), "-l", "INFO", "--without-gossip", "--without-mingle"])


if __name__ == "__main__":
    sys.exit(main())
