"""Applying replies (orchestrator.replies) in the test's own process, on a SQLite file migrated
by Alembic: the timeline a step's replies leave, what the saga owes the broker afterwards, and
the news that must change nothing (duplicates, late errbacks, late retry reports)."""
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from contracts.messages import StepFailed, StepReply
from contracts.names import Task
from orchestrator import replies
from orchestrator.models import Order, Outbox, SagaEvent
from runtime.db import Database


def reply(order_id: str, step: str, status: str = "succeeded", **more: Any) -> StepReply:
    return StepReply.model_validate({"order_id": order_id, "step": step, "status": status,
                                     **more})


def order(db: Engine, order_id: str) -> tuple[str, str | None, bool, bool]:
    with db.connect() as conn:
        row = conn.execute(select(Order).where(Order.id == order_id)).one()
    return row.status, row.reason, row.needs_attention, row.closed


def timeline(db: Engine, order_id: str) -> list[tuple[str, str]]:
    with db.connect() as conn:
        return [(r.name, r.status) for r in conn.execute(
            select(SagaEvent).where(SagaEvent.order_id == order_id).order_by(SagaEvent.id))]


def owed(db: Engine, outbox_ids: list[int]) -> list[str]:
    with db.connect() as conn:
        return list(conn.scalars(select(Outbox.task).where(Outbox.id.in_(outbox_ids))
                                 .order_by(Outbox.id)))


def test_the_chains_last_reply_brings_the_others_and_closes_the_order(
        db: Database, order_id: str) -> None:
    last = reply(order_id, Task.SEND_CONFIRMATION, earlier=[
        reply(order_id, Task.AUTHORIZE_PAYMENT), reply(order_id, Task.RESERVE_STOCK)])
    assert replies.on_reply(db.engine, last) == []
    assert timeline(db.engine, order_id) == [(Task.AUTHORIZE_PAYMENT, "succeeded"),
                                             (Task.RESERVE_STOCK, "succeeded"),
                                             (Task.SEND_CONFIRMATION, "succeeded")]
    assert order(db.engine, order_id) == ("confirmed", None, False, True)


def test_a_failure_after_the_payment_owes_its_refund(db: Database, order_id: str) -> None:
    failed = reply(order_id, Task.RESERVE_STOCK, "failed", reason="out_of_stock",
                   earlier=[reply(order_id, Task.AUTHORIZE_PAYMENT)])
    assert owed(db.engine, replies.on_reply(db.engine, failed)) == [Task.REFUND_PAYMENT]
    assert order(db.engine, order_id) == ("pending", "out_of_stock", False, False)
    refunded = replies.on_reply(db.engine, reply(order_id, Task.REFUND_PAYMENT))
    assert owed(db.engine, refunded) == [Task.SEND_FAILURE_NOTICE]
    assert order(db.engine, order_id)[:2] == ("failed", "out_of_stock")


def test_the_same_reply_delivered_twice_is_applied_once(db: Database, order_id: str) -> None:
    failed = reply(order_id, Task.RESERVE_STOCK, "failed", reason="out_of_stock",
                   earlier=[reply(order_id, Task.AUTHORIZE_PAYMENT)])
    assert len(replies.on_reply(db.engine, failed)) == 1
    assert replies.on_reply(db.engine, failed) == []
    assert len(timeline(db.engine, order_id)) == 2


def test_an_errback_for_a_step_that_had_succeeded_changes_nothing(
        db: Database, order_id: str) -> None:
    replies.on_reply(db.engine, reply(order_id, Task.AUTHORIZE_PAYMENT))
    crashed = StepFailed(order_id=order_id, step=Task.AUTHORIZE_PAYMENT)
    assert replies.on_step_crashed(db.engine, crashed) == []
    assert order(db.engine, order_id) == ("pending", None, False, False)


def test_a_step_that_crashed_is_compensated_too(db: Database, order_id: str) -> None:
    replies.on_reply(db.engine, reply(order_id, Task.AUTHORIZE_PAYMENT))
    crashed = StepFailed(order_id=order_id, step=Task.RESERVE_STOCK)
    # it may have half-happened: its own release first, then the refund
    assert owed(db.engine, replies.on_step_crashed(db.engine, crashed)) == [Task.RELEASE_STOCK]
    assert order(db.engine, order_id)[1] == "inventory_error"


def test_a_poison_message_is_treated_as_a_crash(db: Database, order_id: str) -> None:
    poison = reply(order_id, Task.AUTHORIZE_PAYMENT, "failed", reason="poison_message")
    assert owed(db.engine, replies.on_reply(db.engine, poison)) == [Task.REFUND_PAYMENT]


def test_a_retry_report_arriving_after_the_success_changes_nothing(
        db: Database, order_id: str) -> None:
    late = reply(order_id, Task.AUTHORIZE_PAYMENT, "retrying", reason="stuck",
                 at=datetime(2020, 1, 1, tzinfo=UTC))
    replies.on_reply(db.engine, reply(order_id, Task.AUTHORIZE_PAYMENT))
    assert replies.on_reply(db.engine, late) == []
    assert order(db.engine, order_id)[2] is False  # not flagged by news already overtaken


def test_a_reply_for_an_order_this_saga_never_placed_is_dropped(db: Database) -> None:
    assert replies.on_reply(db.engine, reply("no-such-order", Task.AUTHORIZE_PAYMENT)) == []
