"""The API's saga metrics read the saga's tables once per row, including rows that become
visible out of order (PostgreSQL takes an id before its transaction commits)."""
from datetime import timedelta

from sqlalchemy import delete, insert, update

from orchestrator.metrics import SagaMetrics
from orchestrator.models import Order, SagaEvent
from runtime.db import Database, utcnow


def sample(metrics: SagaMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def event(db: Database, order_id: str, id_: int, name: str, status: str,
          took_s: float = 0.5) -> None:
    at = utcnow()
    with db.engine.begin() as conn:
        conn.execute(insert(SagaEvent.__table__).values(
            id=id_, order_id=order_id, name=name, status=status, attempt=id_, reason=None, at=at,
            detail={"started_at": (at - timedelta(seconds=took_s)).isoformat()}))


def test_each_timeline_entry_counts_once_even_one_that_shows_up_late(db: Database,
                                                                     order_id: str) -> None:
    metrics = SagaMetrics(db.engine, lambda: {"payment": 3})
    metrics.catch_up()  # the first scrape: counting starts
    event(db, order_id, 10, "payment.authorize", "retrying")
    event(db, order_id, 12, "payment.authorize", "succeeded", took_s=0.02)
    metrics.catch_up()
    metrics.catch_up()  # nothing new: nothing counted twice
    assert sample(metrics, "saga_step_retries_total", step="payment.authorize") == 1
    assert sample(metrics, "saga_step_seconds_count", step="payment.authorize",
                  outcome="succeeded") == 1
    assert sample(metrics, "saga_step_seconds_bucket", step="payment.authorize",
                  outcome="succeeded", le="0.025") == 1
    # id 11 was taken before 12 but committed after it was read
    event(db, order_id, 11, "payment.refund", "succeeded")
    metrics.catch_up()
    assert sample(metrics, "saga_compensations_total", step="payment.refund") == 1
    metrics.catch_up()
    assert sample(metrics, "saga_compensations_total", step="payment.refund") == 1


def test_an_order_counts_once_per_terminal_status_it_reaches(db: Database, order_id: str) -> None:
    metrics = SagaMetrics(db.engine, dict)
    metrics.catch_up()
    orders = Order.__table__
    with db.engine.begin() as conn:
        conn.execute(delete(SagaEvent.__table__))
        created = conn.execute(orders.select()).one().created_at
        conn.execute(update(orders).values(status="confirmed", closed=False,
                                           ended_at=created + timedelta(seconds=2)))
    metrics.catch_up()
    metrics.catch_up()
    assert sample(metrics, "saga_orders_total", status="confirmed", reason="") == 1
    assert sample(metrics, "saga_order_seconds_sum", status="confirmed") == 2.0
    with db.engine.begin() as conn:
        conn.execute(update(orders).values(status="cancelled", reason="cancelled", closed=True,
                                           ended_at=created + timedelta(seconds=9)))
    metrics.catch_up()
    assert sample(metrics, "saga_orders_total", status="cancelled", reason="cancelled") == 1
    assert sample(metrics, "saga_orders_total", status="confirmed", reason="") == 1
    # what is open or waiting is counted afresh at each scrape
    metrics.catch_up()
    assert sample(metrics, "saga_orders_open") == 0
    assert sample(metrics, "saga_outbox_owed") == 1  # the POST's, never published here
    assert metrics.registry.get_sample_value("saga_queue_depth", {"queue": "payment"}) is None
