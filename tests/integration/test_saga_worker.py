"""The saga worker's real process, on a real Redis and its own SQLite database."""
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from contracts.messages import StepFailed, StepReply
from contracts.names import Queue, Task
from orchestrator import orders
from orchestrator.schemas import OrderIn
from runtime.db import make_engine
from tests.support.paths import ROOT
from tests.support.replies import sender
from tests.support.waiting import wait_for


@contextmanager
def saga_worker(redis_url: str, tmp_path: Path) -> Iterator[tuple[Engine, str, "Sender"]]:
    """A migrated orchestrator database holding one placed order, and a way to start the
    saga worker on it and send it messages."""
    from devstack.supervisor import Supervisor
    url = f"sqlite:///{tmp_path}/orchestrator.db"
    env = {"REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_DATABASE_URL": url}
    db = make_engine(url)
    with Supervisor(log_dir=tmp_path / "log", cwd=ROOT) as supervisor:
        supervisor.run_once("migrate", [sys.executable, "-m", "orchestrator", "migrate"], env)
        order_id = orders.place(db, OrderIn.model_validate({
            "customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 1}],
            "payment_token": "tok_visa"}), None).order_id
        yield db, order_id, Sender(supervisor, env)
    db.dispose()


class Sender:
    def __init__(self, supervisor, env) -> None:
        self.supervisor, self.env = supervisor, env
        self.app = sender(env["REDIS_URL"])

    def start(self) -> None:
        self.supervisor.add("saga", [sys.executable, "-m", "orchestrator", "saga-worker",
                                     "-c", "2"], self.env, restart=False)

    def send(self, task: str, message) -> None:
        self.app.send_task(task, args=(message.model_dump(mode="json"),), queue=Queue.SAGA)

    def output(self) -> str:
        return self.supervisor.recent_output("saga", 200)


def events(db: Engine, order_id: str) -> list:
    with db.connect() as conn:
        return list(conn.execute(text(
            "SELECT name, status FROM saga_events WHERE order_id = :id ORDER BY id"),
            {"id": order_id}))


def test_a_reply_that_meets_its_database_away_is_applied_once_it_is_back(redis_db, tmp_path):
    with saga_worker(redis_db, tmp_path) as (db, order_id, saga):
        # another client holds the saga database's write lock: "database is locked" once the
        # worker's busy timeout is past, as when a restarting database keeps it waiting
        holder = sqlite3.connect(db.url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        saga.start()
        saga.send(Task.STEP_RESULT, StepReply(order_id=order_id, step=Task.AUTHORIZE_PAYMENT,
                                              status="succeeded"))
        try:
            wait_for(lambda: "saga database unavailable" in saga.output(),
                     timeout=60, what="the reply to be retried")
        finally:
            holder.rollback()
            holder.close()
        assert wait_for(lambda: events(db, order_id), timeout=90,
                        what="the reply to be applied") == [(Task.AUTHORIZE_PAYMENT, "succeeded")]


def test_a_step_that_raised_is_compensated_and_the_order_fails(redis_db, tmp_path):
    with saga_worker(redis_db, tmp_path) as (db, order_id, saga):
        saga.start()
        saga.send(Task.STEP_FAILED, StepFailed(order_id=order_id, step=Task.AUTHORIZE_PAYMENT))
        assert wait_for(lambda: events(db, order_id), timeout=60,
                        what="the errback to be applied") == [(Task.AUTHORIZE_PAYMENT, "failed")]
        with db.connect() as conn:
            status, reason, compensating = conn.execute(text(
                "SELECT status, reason, compensating FROM orders WHERE id = :id"),
                {"id": order_id}).one()
        # it may have half-happened: its own compensation runs (a refund of nothing is a no-op)
        assert (status, reason) == ("pending", "payment_error")
        assert Task.REFUND_PAYMENT in compensating
        assert "step raised" in saga.output()
