"""The saga worker's real process, on a real Redis and its own SQLite database."""
import sys

import redis
from sqlalchemy import text

from contracts.messages import StepReply
from contracts.names import Queue, Task
from contracts.runtime.app import make_app
from contracts.runtime.store import make_engine
from orchestrator import orders
from orchestrator.schemas import OrderIn
from tests.e2e.conftest import redis_db, wait_for
from tests.integration.conftest import ROOT


def test_a_reply_that_meets_its_database_away_is_applied_once_it_is_back(redis_url, tmp_path):
    from devstack.supervisor import Supervisor
    url = f"sqlite:///{tmp_path}/orchestrator.db"
    env = {"REDIS_URL": redis_db(redis_url, 7), "PYTHONPATH": str(ROOT),
           "ORCHESTRATOR_DATABASE_URL": url}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()  # DB 7 is this test's own
    db = make_engine(url)
    with Supervisor(log_dir=tmp_path / "log", cwd=ROOT) as supervisor:
        supervisor.run_once("migrate", [sys.executable, "-m", "orchestrator", "migrate"], env)
        order_id = orders.place(db, OrderIn.model_validate({
            "customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 1}],
            "payment_token": "tok_visa"}), None).order_id
        # the saga's tables gone for a moment: what a locked or restarting database looks like
        # to the reply handler (an OperationalError)
        with db.begin() as conn:
            conn.execute(text("ALTER TABLE saga_events RENAME TO saga_events_away"))
        supervisor.add("saga", [sys.executable, "-m", "orchestrator", "saga-worker", "-c", "2"],
                       env, restart=False)
        reply = StepReply(order_id=order_id, step=Task.AUTHORIZE_PAYMENT, status="succeeded")
        make_app("test-sender", env["REDIS_URL"]).send_task(
            Task.STEP_RESULT, args=(reply.model_dump(mode="json"),), queue=Queue.SAGA)
        wait_for(lambda: "saga database unavailable" in supervisor.recent_output("saga", 200),
                 timeout=60, what="the reply to be retried")
        with db.begin() as conn:
            conn.execute(text("ALTER TABLE saga_events_away RENAME TO saga_events"))

        def applied() -> list:
            with db.connect() as conn:
                return list(conn.execute(text(
                    "SELECT name, status FROM saga_events WHERE order_id = :id"),
                    {"id": order_id}))
        assert wait_for(applied, timeout=90, what="the reply to be applied") == [
            (Task.AUTHORIZE_PAYMENT, "succeeded")]
    db.dispose()
