"""Cancelling and re-driving an order, and the dead letters reported to the saga, applied in the
test's own process on the orchestrator's migrated SQLite file: what each answers, what it leaves
on the timeline, and what it owes the broker."""
from datetime import UTC, datetime

from contracts.messages import DeadLetterReport
from contracts.names import Task
from orchestrator import dead_letter_reports, replies, steering
from runtime.db import Database
from tests.unit.test_replies import order, owed, reply, timeline


def test_cancelling_a_pending_order_owes_its_compensations_and_asking_again_changes_nothing(
        db: Database, order_id: str) -> None:
    done = steering.cancel(db.engine, order_id, "customer changed their mind")
    assert (done.answer, owed(db.engine, done.owed)) == ("accepted", [Task.RELEASE_STOCK])
    assert order(db.engine, order_id) == ("pending", "cancelled", False, False)
    assert steering.cancel(db.engine, order_id, None).answer == "already"
    assert timeline(db.engine, order_id) == [(steering.CANCEL, "requested")]
    # the compensations report back; then the customer is told
    replies.on_reply(db.engine, reply(order_id, Task.RELEASE_STOCK))
    refunded = replies.on_reply(db.engine, reply(order_id, Task.REFUND_PAYMENT))
    assert owed(db.engine, refunded) == [Task.SEND_CANCELLATION_NOTICE]
    replies.on_reply(db.engine, reply(order_id, Task.SEND_CANCELLATION_NOTICE))
    assert order(db.engine, order_id) == ("cancelled", "cancelled", False, True)
    assert steering.cancel(db.engine, order_id, None) == steering.Steered("already", "cancelled")


def test_a_failed_order_cannot_be_cancelled_and_an_unknown_one_is_unknown(
        db: Database, order_id: str) -> None:
    replies.on_reply(db.engine, reply(order_id, Task.AUTHORIZE_PAYMENT, "failed",
                                      reason="payment_declined"))
    assert steering.cancel(db.engine, order_id, None) == steering.Steered("refused", "failed")
    assert steering.cancel(db.engine, "no-such-order", None).answer == "unknown"


def test_a_re_drive_is_refused_for_an_order_that_needs_nothing(
        db: Database, order_id: str) -> None:
    assert steering.retry(db.engine, order_id) == steering.Steered("refused", "pending")


def test_a_dead_letter_about_an_order_flags_it_and_a_re_drive_sends_what_it_waits_for(
        db: Database, order_id: str) -> None:
    report = DeadLetterReport(service="inventory", dead_letter_id=7, task=Task.RESERVE_STOCK,
                              order_id=order_id, error="ValueError: boom",
                              created_at=datetime.now(UTC))
    assert dead_letter_reports.receive(db.engine, report) == []
    assert dead_letter_reports.receive(db.engine, report) == []  # reported twice: kept once
    assert order(db.engine, order_id)[2] is True
    assert timeline(db.engine, order_id) == [(Task.RESERVE_STOCK, "dead_lettered")]
    with db.read_sessions() as session:
        found, more = dead_letter_reports.page(session, 10)
    assert [(r.service, r.dead_letter_id, r.order_id) for r in found] == [
        ("inventory", 7, order_id)]
    assert more is None
    # still pending: the re-drive sends the chain again; the flag clears when it ends
    done = steering.retry(db.engine, order_id)
    assert (done.answer, owed(db.engine, done.owed)) == ("accepted", [Task.AUTHORIZE_PAYMENT])
    assert order(db.engine, order_id)[2] is True
    replies.on_reply(db.engine, reply(order_id, Task.SEND_CONFIRMATION, earlier=[
        reply(order_id, Task.AUTHORIZE_PAYMENT), reply(order_id, Task.RESERVE_STOCK)]))
    assert order(db.engine, order_id) == ("confirmed", None, False, True)
    assert timeline(db.engine, order_id)[1] == (steering.RETRY, "requested")
