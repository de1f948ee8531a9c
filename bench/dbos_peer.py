"""The DBOS peer (`--peers`): the same three effects (bench/effects.py) as one durable DBOS
workflow, the refund as its compensation, behind the same `POST /orders` (bench/plain_api.py).

Configured as DBOS documents for a throughput-minded single server: the workflow is started in
the process that took the request (`DBOS.start_workflow`, which returns once the workflow is
durably recorded; DBOS's own benchmark calls this starting workflows locally), one process
serving HTTP and running the workflows; the system database is SQLite (DBOS's default), or
PostgreSQL when the bench runs with --postgres (what DBOS recommends for production). Its
SQLite gets the pragmas every other contender's has (WAL, synchronous NORMAL); its executor
runs as many workflows at once as the saga's three workers run steps.

    python -m bench.dbos_peer api --port P
"""
import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from dbos import DBOS, DBOSConfig, SetWorkflowID
from sqlalchemy import Engine, event

from bench import effects
from bench.plain_api import make_api, serve

DATABASES = {"orders": "DBOS_ORDERS_URL", "payment": "DBOS_PAYMENT_URL",
             "inventory": "DBOS_INVENTORY_URL"}


def database(part: str) -> Engine:
    return effects.engine_from_env(DATABASES[part])


def mailer() -> effects.Mailer:
    return effects.mailer_from_env()


@DBOS.step()
def authorize_payment(order: dict[str, Any]) -> str:
    return effects.authorize(database("payment"), order)


@DBOS.step()
def reserve_stock(order: dict[str, Any]) -> None:
    effects.reserve(database("inventory"), order)


@DBOS.step()
def refund_payment(order: dict[str, Any]) -> str:
    return effects.refund(database("payment"), order)


@DBOS.step()
def send_confirmation(order: dict[str, Any]) -> None:
    effects.confirm(database("orders"), mailer(), order)


@DBOS.step()
def mark_failed(order: dict[str, Any]) -> None:
    effects.set_status(database("orders"), order["id"], "failed")


@DBOS.workflow()
def checkout(order: dict[str, Any]) -> str:
    try:
        authorize_payment(order)
    except effects.Declined:
        mark_failed(order)
        return "failed"
    try:
        reserve_stock(order)
    except effects.OutOfStock:
        refund_payment(order)  # the compensation
        mark_failed(order)
        return "failed"
    send_confirmation(order)
    return "confirmed"


def start(order: dict[str, Any]) -> None:
    # the order's id as the workflow's: a second start of the same order is the same workflow
    with SetWorkflowID(order["id"]):
        DBOS.start_workflow(checkout, order)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # every SQLite connection of this process, DBOS's system database's included (its own
    # engine's settings, IMMEDIATE transactions and a busy timeout, stay as they are)
    if isinstance(dbapi_conn, sqlite3.Connection):
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def launch(system_database_url: str, workflows_at_once: int) -> None:
    event.listen(Engine, "connect", _sqlite_pragmas)
    config: DBOSConfig = {"name": "bench-dbos", "system_database_url": system_database_url,
                          "max_executor_threads": workflows_at_once, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve POST /orders and run the workflows")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    launch(os.environ["DBOS_SYSTEM_DATABASE_URL"],
           3 * int(os.environ.get("WORKER_CONCURRENCY", 8)))
    try:
        serve(make_api(database("orders"), start), args.host, args.port)
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
