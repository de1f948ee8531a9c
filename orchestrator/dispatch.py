"""Turning the saga's decisions into Celery messages, through the outbox: a row is written with
the decision, published after the commit, and re-published by the relay if that publish failed."""
import logging
import threading
import time
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from contracts.messages import (AuthorizePayment, OrderLine, RefundPayment, ReleaseStock,
                                SagaOrder, SendFailureNotice, StepFailed)
from contracts.names import Queue, Task, queue_of
from contracts.runtime.app import brief
from contracts.runtime.store import utcnow
from orchestrator import saga
from orchestrator.models import Order, Outbox

log = logging.getLogger("saga.dispatch")

# The outbox already guarantees the message: publishing from a request (or the relay) gives up
# at once when the broker is away, instead of holding the request for the patient default.
FAIL_FAST = {"retry": True, "retry_policy": {"max_retries": 1, "interval_start": 0,
                                              "interval_step": 0.2, "interval_max": 0.2}}


def saga_order(order: Order) -> SagaOrder:
    return SagaOrder(order_id=order.id, customer_email=order.customer_email,
                     items=[OrderLine(**line) for line in order.items],
                     total_cents=order.total_cents, currency=order.currency)


def errback(app: Celery, order_id: str, step: str) -> Signature:
    # Immutable and routed to our own queue: it must run in the saga worker, never inline in
    # the worker of the step that failed (see CELERY_NOTES.md, "When a step fails").
    return app.signature(Task.STEP_FAILED, args=(StepFailed(order_id=order_id, step=step)
                                                 .model_dump(mode="json"),),
                         immutable=True, queue=Queue.SAGA, **brief(order_id))


def _signature(app: Celery, order_id: str, task: str, args: tuple[Any, ...] = ()) -> Signature:
    sig = app.signature(task, args=args, queue=queue_of(task), task_id=f"{order_id}:{task}",
                        **brief(order_id))
    sig.on_error(errback(app, order_id, task))
    return sig


def forward_chain(app: Celery, order: Order) -> Signature:
    """ONE chain across the three queues; each step gets the previous step's output."""
    first = AuthorizePayment(order=saga_order(order), payment_token=order.payment_token)
    steps = [_signature(app, order.id, step.action) for step in saga.STEPS]
    steps[0].args = (first.model_dump(mode="json"),)
    return chain(*steps)


def message(order: Order, task: str) -> dict[str, Any]:
    if task == Task.REFUND_PAYMENT:
        return RefundPayment(order_id=order.id).model_dump(mode="json")
    if task == Task.RELEASE_STOCK:
        return ReleaseStock(order_id=order.id).model_dump(mode="json")
    if task == Task.SEND_FAILURE_NOTICE:
        return SendFailureNotice(order=saga_order(order), reason=order.reason or "failed",
                                 refunded=Task.REFUND_PAYMENT in order.compensated
                                 ).model_dump(mode="json")
    raise ValueError(f"the saga has no message for {task}")


def publish(app: Celery, order: Order, task: str) -> None:
    if task == saga.STEPS[0].action:
        forward_chain(app, order).apply_async(**FAIL_FAST)
    else:
        _signature(app, order.id, task, (message(order, task),)).apply_async(**FAIL_FAST)


def flush(app: Celery, sessions: sessionmaker, outbox_ids: list[int]) -> None:  # type: ignore[type-arg]
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


def relay(app: Celery, sessions: sessionmaker, grace_s: float) -> int:  # type: ignore[type-arg]
    """Re-publish what the API or a reply handler committed but did not get to publish."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with sessions.begin() as session:
        owed = list(session.scalars(select(Outbox.id).where(
            Outbox.sent_at.is_(None), Outbox.created_at < cutoff).order_by(Outbox.id).limit(500)))
    if owed:
        log.warning("relaying %d owed message(s)", len(owed))
        flush(app, sessions, owed)
    return len(owed)


def publish_placed(app: Celery, sessions: sessionmaker, order: Order,  # type: ignore[type-arg]
                   outbox_id: int) -> None:
    """A new order's saga, published from the request that stored it. Its outbox row is marked
    sent a moment later together with others' (SentMarks); if the publish fails, it stays owed
    and the relay sends it."""
    try:
        publish(app, order, saga.STEPS[0].action)
    except Exception:  # the broker is away: the row stays owed
        log.exception("publish failed order_id=%s task=%s", order.id, saga.STEPS[0].action)
        return
    sent_marks(sessions).add(outbox_id)


class SentMarks:
    """Outbox rows published from requests, marked sent in one UPDATE every `every_s` rather
    than in a write transaction per request. A row whose mark is lost (the process died first)
    is published again by the relay after its grace, which the steps' idempotency makes
    harmless."""

    def __init__(self, sessions: sessionmaker, every_s: float = 0.05) -> None:  # type: ignore[type-arg]
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


@cache
def sent_marks(sessions: sessionmaker) -> SentMarks:  # type: ignore[type-arg]
    return SentMarks(sessions)
