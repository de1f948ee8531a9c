"""Each process reports its dead letters to the saga (runtime.reporting): once each, and a dead
letter that cannot be reported whole never blocks the ones after it."""
from typing import Any

from contracts.messages import DeadLetterReport, utcnow
from contracts.names import Queue, Task
from orchestrator import dead_letter_reports, steering
from orchestrator.models import DeadLetter
from runtime.db import Database
from runtime.deadletters import DeadLetters
from runtime.reporting import report
from tests.unit.test_replies import order, timeline


class Sent:
    """Stands in for the Celery app's send_task (the broker is not what is tested here)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], str]] = []

    def send_task(self, name: str, args: tuple[Any, ...], queue: str, **_: Any) -> None:
        self.messages.append((name, args[0], queue))


def test_dead_letters_are_reported_once_and_a_misfit_is_cut_not_blocking(db: Database) -> None:
    letters = DeadLetters(db.sessions, DeadLetter)
    letters.store("x" * 300, "o" * 100, {"junk": True}, "claims a task name nothing can hold")
    letters.store(Task.RESERVE_STOCK, "order-1", {"order": {}}, "ValidationError: …")
    letters.store(Task.DEAD_LETTER, None, {}, "a report the saga could not take")
    app = Sent()
    assert report(app, "inventory", letters) == 3
    assert [(m["task"][:3], m["order_id"], q) for _, m, q in app.messages] == [
        ("xxx", None, Queue.SAGA), (Task.RESERVE_STOCK[:3], "order-1", Queue.SAGA)]
    assert {m["service"] for _, m, _ in app.messages} == {"inventory"}
    assert report(app, "inventory", letters) == 0  # all marked: nothing goes twice


def test_each_re_drive_is_its_own_timeline_entry(db: Database, order_id: str) -> None:
    for dead_letter_id in (1, 2):
        dead_letter_reports.receive(db.engine, DeadLetterReport(
            service="payment", dead_letter_id=dead_letter_id, task=Task.AUTHORIZE_PAYMENT,
            order_id=order_id, error="boom", created_at=utcnow()))
        assert steering.retry(db.engine, order_id).answer == "accepted"
    assert timeline(db.engine, order_id) == [
        (Task.AUTHORIZE_PAYMENT, "dead_lettered"), (steering.RETRY, "requested"),
        (Task.AUTHORIZE_PAYMENT, "dead_lettered"), (steering.RETRY, "requested")]
    assert order(db.engine, order_id)[2] is True  # waits for its chain to come back
