"""The saga worker's real process, on a real Redis and its own SQLite database."""
import socket
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import Engine, text

from contracts.messages import StepFailed, StepReply
from contracts.names import Queue, Task
from orchestrator import orders
from orchestrator.schemas import OrderIn
from runtime.db import make_engine
from runtime.reply_stream import GROUP, STREAM, ReplyStream
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
        self.redis = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
        self.stream = ReplyStream(self.redis)

    def start(self) -> None:
        self.supervisor.add("saga", [sys.executable, "-m", "orchestrator", "saga-worker",
                                     "-c", "2"], self.env, restart=False)

    def send(self, task: str, message) -> None:
        self.app.send_task(task, args=(message.model_dump(mode="json"),), queue=Queue.SAGA)

    def reply(self, reply: StepReply) -> None:
        """As a step sends it on Redis: onto the replies' stream."""
        self.stream.send(reply.model_dump(mode="json"), reply.order_id, {})

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


def dead_letters(db: Engine) -> list:
    with db.connect() as conn:
        return list(conn.execute(text("SELECT task, order_id, error FROM dead_letters")))


def test_replies_on_the_stream_that_meet_their_database_away_are_applied_once_it_is_back(
        redis_db, tmp_path):
    with saga_worker(redis_db, tmp_path) as (db, order_id, saga):
        holder = sqlite3.connect(db.url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        saga.start()
        saga.reply(StepReply(order_id=order_id, step=Task.AUTHORIZE_PAYMENT, status="succeeded"))
        saga.reply(StepReply(order_id=order_id, step=Task.RESERVE_STOCK, status="succeeded"))
        try:
            wait_for(lambda: "replies not applied" in saga.output(), timeout=60,
                     what="the batch to be retried")
            assert saga.stream.waiting() == 2  # read, not acknowledged: still there
        finally:
            holder.rollback()
            holder.close()
        assert wait_for(lambda: len(events(db, order_id)) == 2 and events(db, order_id),
                        timeout=90, what="the replies to be applied") == [
            (Task.AUTHORIZE_PAYMENT, "succeeded"), (Task.RESERVE_STOCK, "succeeded")]
        wait_for(lambda: saga.stream.waiting() == 0, timeout=10, what="the stream emptied")


def test_junk_on_the_replies_stream_is_dead_lettered_and_the_replies_around_it_applied(
        redis_db, tmp_path):
    with saga_worker(redis_db, tmp_path) as (db, order_id, saga):
        saga.redis.xadd(STREAM, {"reply": "{not json", "order_id": order_id})
        saga.redis.xadd(STREAM, {"reply": '{"order_id": 5}'})
        saga.reply(StepReply(order_id=order_id, step=Task.AUTHORIZE_PAYMENT, status="succeeded"))
        saga.start()
        assert wait_for(lambda: events(db, order_id), timeout=60) == [
            (Task.AUTHORIZE_PAYMENT, "succeeded")]
        kept = wait_for(lambda: len(dead_letters(db)) == 2 and dead_letters(db), timeout=10)
        assert [(task, order) for task, order, _ in kept] == [
            (Task.STEP_RESULT, order_id), (Task.STEP_RESULT, None)]
        assert saga.stream.waiting() == 0


def test_what_a_saga_worker_read_before_it_died_is_applied_when_it_starts_and_poison_kept(
        redis_db, tmp_path):
    with saga_worker(redis_db, tmp_path) as (db, order_id, saga):
        saga.reply(StepReply(order_id=order_id, step=Task.AUTHORIZE_PAYMENT, status="succeeded"))
        saga.reply(StepReply(order_id=order_id, step=Task.RESERVE_STOCK, status="succeeded"))
        # a saga worker of this name read both and died; the second it had read six times
        # (it died on it each time)
        consumer = f"saga@{socket.gethostname()}"
        saga.stream.join()
        [[_, entries]] = saga.redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=2)
        for _ in range(5):  # a read of its history past the first entry: the second again
            saga.redis.xreadgroup(GROUP, consumer, {STREAM: entries[0][0]}, count=1)
        assert saga.stream.deliveries([e for e, _ in entries]) == {
            entries[0][0]: 1, entries[1][0]: 6}
        saga.start()
        assert wait_for(lambda: events(db, order_id), timeout=60) == [
            (Task.AUTHORIZE_PAYMENT, "succeeded")]
        kept = wait_for(lambda: dead_letters(db), timeout=10)
        assert [(task, order) for task, order, _ in kept] == [(Task.STEP_RESULT, order_id)]
        assert "poison" in kept[0][2]
        assert saga.stream.waiting() == 0


def test_replies_sent_after_redis_lost_everything_are_applied(redis_db, tmp_path):
    with saga_worker(redis_db, tmp_path) as (db, order_id, saga):
        saga.start()
        saga.reply(StepReply(order_id=order_id, step=Task.AUTHORIZE_PAYMENT, status="succeeded"))
        wait_for(lambda: events(db, order_id), timeout=60, what="the first reply")
        saga.redis.flushdb()  # the stream and its consumer group are gone (NOGROUP)
        saga.reply(StepReply(order_id=order_id, step=Task.RESERVE_STOCK, status="succeeded"))
        assert wait_for(lambda: len(events(db, order_id)) == 2 and events(db, order_id),
                        timeout=60, what="the reply after the wipe") == [
            (Task.AUTHORIZE_PAYMENT, "succeeded"), (Task.RESERVE_STOCK, "succeeded")]
