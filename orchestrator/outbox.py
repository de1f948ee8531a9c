"""The outbox: every message the saga owes is a row written in the same transaction as the
decision to send it, published after the commit, and re-published by the relay if that publish
failed. Publishing gives up at once when the broker is away (runtime.retries.FAIL_FAST): the
row stays owed."""
import logging
import threading
import time
from datetime import timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import chain, saga
from orchestrator.models import Order, Outbox
from runtime.db import utcnow
from runtime.retries import FAIL_FAST

log = logging.getLogger("saga.dispatch")


def publish(app: Celery, order: Order, task: str) -> None:
    chain.for_task(app, order, task).apply_async(**FAIL_FAST)


def flush(app: Celery, sessions: "sessionmaker[Session]", outbox_ids: list[int]) -> None:
    """Publish owed messages; one that fails stays owed and the relay tries it again."""
    for outbox_id in outbox_ids:
        with sessions.begin() as session:
            row = session.get(Outbox, outbox_id, with_for_update=True)
            if row is None or row.sent_at is not None:
                continue
            row.attempts += 1
            order = session.get(Order, row.order_id)
            assert order is not None
            try:
                publish(app, order, row.task)
            except Exception:  # the broker is away: the row stays owed
                log.exception("publish failed order_id=%s task=%s attempt=%s",
                              row.order_id, row.task, row.attempts)
                continue
            row.sent_at = utcnow()


def relay(app: Celery, sessions: "sessionmaker[Session]", grace_s: float) -> int:
    """Re-publish what the API or a reply handler committed but did not get to publish."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with sessions.begin() as session:
        owed = list(session.scalars(select(Outbox.id).where(
            Outbox.sent_at.is_(None), Outbox.created_at < cutoff).order_by(Outbox.id).limit(500)))
    if owed:
        log.warning("relaying %d owed message(s)", len(owed))
        flush(app, sessions, owed)
    return len(owed)


def publish_placed(app: Celery, marks: "SentMarks", order: Order, outbox_id: int) -> None:
    """A new order's saga, published from the request that stored it. Its outbox row is marked
    sent a moment later together with others' (SentMarks); if the publish fails, it stays owed
    and the relay sends it."""
    try:
        publish(app, order, saga.STEPS[0].action)
    except Exception:  # the broker is away: the row stays owed
        log.exception("publish failed order_id=%s task=%s", order.id, saga.STEPS[0].action)
        return
    marks.add(outbox_id)


class SentMarks:
    """Outbox rows published from requests, marked sent in one UPDATE every `every_s` rather
    than in a write transaction per request. A row whose mark is lost (the process died first)
    is published again by the relay after its grace, which the steps' idempotency makes
    harmless."""

    def __init__(self, sessions: "sessionmaker[Session]", every_s: float = 0.05) -> None:
        self.sessions, self.every_s = sessions, every_s
        self.ids: list[int] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, outbox_id: int) -> None:
        with self.lock:
            self.ids.append(outbox_id)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="outbox-sent-marks",
                                               daemon=True)
                self.thread.start()

    def flush(self) -> None:
        with self.lock:
            ids, self.ids = self.ids, []
        if not ids:
            return
        try:
            with self.sessions.begin() as session:
                session.execute(update(Outbox).where(Outbox.id.in_(ids), Outbox.sent_at.is_(None))
                                .values(sent_at=utcnow(), attempts=Outbox.attempts + 1))
        except Exception:  # unmarked rows are published again by the relay: harmless
            log.exception("could not mark %d outbox row(s) sent", len(ids))

    def _run(self) -> None:
        while True:
            time.sleep(self.every_s)
            self.flush()

