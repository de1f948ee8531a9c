"""The outbox: every message the saga owes is a row written in the same transaction as the
decision to send it, published after the commit (never inside a transaction), and re-published
by the relay if that publish failed. Publishing gives up at once when the broker is away or hung
(runtime.retries.FAIL_FAST, and the broker's socket timeouts in runtime.celery_app): the row
stays owed."""
import logging
import queue
import threading
import time
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import chain, saga
from orchestrator.models import Order, Outbox
from runtime import tracing
from runtime.batches import next_batch
from runtime.db import Database, utcnow
from runtime.retries import FAIL_FAST

log = logging.getLogger("saga.dispatch")


def publish(app: Celery, order: Order, task: str) -> None:
    with tracing.within_order(order.id, order.trace_parent):
        chain.for_task(app, order, task)(**FAIL_FAST)


def flush(app: Celery, db: Database, outbox_ids: list[int]) -> int:
    """Publish owed messages, each outside any transaction: read what it says, publish, then
    mark it sent. No lock is held while the broker is asked, so a hung broker never stalls a
    writer (on SQLite, every writer). The first that fails stops the round, since the broker is
    away: it and the rest stay owed for the relay. Returns how many were sent."""
    sent = 0
    for outbox_id in outbox_ids:
        with db.read_sessions() as session:
            row = session.get(Outbox, outbox_id)
            if row is None or row.sent_at is not None:
                continue
            order = session.get(Order, row.order_id)
            assert order is not None
            task = row.task
            message = chain.for_task(app, order, task)  # built here, published after the read
            order_id, trace_parent = order.id, order.trace_parent
        try:
            with tracing.within_order(order_id, trace_parent):
                message(**FAIL_FAST)
        except Exception as exc:  # the broker is away: the row stays owed
            log.warning("publish failed order_id=%s task=%s: %s: %s (left to the relay)",
                        order.id, task, type(exc).__name__, exc)
            _count_attempts(db.sessions, [outbox_id], sent=False)
            break
        _count_attempts(db.sessions, [outbox_id], sent=True)
        sent += 1
    return sent


def _count_attempts(sessions: "sessionmaker[Session]", outbox_ids: list[int], sent: bool) -> None:
    """One short write: the rows' attempts, and their sent mark when the broker took them."""
    values: dict[str, Any] = {"attempts": Outbox.attempts + 1}
    if sent:
        values["sent_at"] = utcnow()
    with sessions.begin() as session:
        session.execute(update(Outbox).where(Outbox.id.in_(outbox_ids), Outbox.sent_at.is_(None))
                        .values(**values))


def relay(app: Celery, db: Database, grace_s: float) -> int:
    """Re-publish what the API or a reply handler committed but did not get to publish."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with db.read_sessions() as session:
        owed = list(session.scalars(select(Outbox.id).where(
            Outbox.sent_at.is_(None), Outbox.created_at < cutoff).order_by(Outbox.id).limit(500)))
    if owed:
        log.warning("relaying %d owed message(s)", len(owed))
        flush(app, db, owed)
    return len(owed)


class Publisher:
    """The API's publishing, off the request path: a request stores the order with its outbox
    row, hands it here and answers at once, whether the broker is up, refusing or hung. One
    thread publishes what was handed over and marks the rows sent in one UPDATE per batch.

    A publish that fails (the broker away or hung: bounded by the broker's socket timeouts)
    pauses publishing for `pause_s`: what is handed over meanwhile stays owed, and the saga
    worker's relay sends it (after its grace). So does a row whose mark is lost when this
    process dies; the steps' idempotency makes a second publish harmless."""

    def __init__(self, app: Celery, sessions: "sessionmaker[Session]", pause_s: float = 2.0,
                 max_waiting: int = 10_000) -> None:
        self.app, self.sessions, self.pause_s = app, sessions, pause_s
        self.waiting: queue.Queue[tuple[Order, int, str] | None] = queue.Queue(max_waiting)
        self.paused_until = 0.0
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.closed = False

    def submit(self, order: Order, outbox_id: int, task: str = saga.STEPS[0].action) -> None:
        """Never blocks: a row that cannot wait here stays owed for the relay. `order` as it
        stands after the decision that owes the row (a notice's message is built from it)."""
        with self.lock:
            if self.closed:
                return  # shutting down: the relay sends it
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="outbox-publisher",
                                               daemon=True)
                self.thread.start()
        try:
            self.waiting.put_nowait((order, outbox_id, task))
        except queue.Full:
            log.warning("publisher backlog full order_id=%s: left to the relay", order.id)

    def submit_rows(self, session: Session, order: Order, outbox_ids: list[int]) -> None:
        """Hand over the outbox rows a decision about `order` owed (a cancel, a re-drive)."""
        for row in session.scalars(select(Outbox).where(Outbox.id.in_(outbox_ids))):
            self.submit(order, row.id, row.task)

    def close(self, timeout_s: float = 3.0) -> None:
        """Publish and mark what was handed over, for at most `timeout_s` (at shutdown)."""
        with self.lock:
            self.closed = True
            thread, self.thread = self.thread, None
        if thread is not None:
            try:
                self.waiting.put(None, timeout=timeout_s)
            except queue.Full:
                return  # a backlog this long is the relay's
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            batch = next_batch(self.waiting)
            items = [item for item in batch if item is not None]
            published = {outbox_id: self._publish(order, task)
                         for order, outbox_id, task in items}
            for was_sent in (True, False):
                ids = [outbox_id for outbox_id, ok in published.items() if ok is was_sent]
                if not ids:
                    continue
                try:
                    _count_attempts(self.sessions, ids, sent=was_sent)
                except Exception:  # unmarked rows are published again by the relay: harmless
                    log.exception("could not mark %d outbox row(s)", len(ids))
            if None in batch:
                return

    def _publish(self, order: Order, task: str) -> bool | None:
        """True: published; False: the publish failed; None: not tried (paused)."""
        if time.monotonic() < self.paused_until:
            return None
        try:
            publish(self.app, order, task)
            return True
        except Exception as exc:
            self.paused_until = time.monotonic() + self.pause_s
            log.warning("publish failed order_id=%s: %s: %s (publishing paused %.0fs; the relay "
                        "sends what is owed)", order.id, type(exc).__name__, exc, self.pause_s)
            return False
