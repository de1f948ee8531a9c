"""The saga worker: replies and errbacks in, decisions out through the outbox; and, beside the
consumer, the relay and the sweeper that need no message to arrive."""
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task as BaseTask
from celery import bootsteps
from pydantic import ValidationError
from sqlalchemy import Engine

from contracts.messages import DeadLetterReport, StepFailed, StepReply
from contracts.names import Task
from orchestrator import dead_letter_reports, outbox, replies, reply_reader, sweeper
from orchestrator.settings import Settings
from runtime.celery_app import SagaApp
from runtime.db import Database, database_trouble
from runtime.deadletters import DeadLetteringTask
from runtime.headers import brief
from runtime.retries import backoff_s

log = logging.getLogger("saga.worker")
M = TypeVar("M", StepReply, StepFailed, DeadLetterReport)
CeleryTask = BaseTask[Any, Any]


def register(app: SagaApp, db: Database, settings: Settings) -> None:
    """The saga worker's entry points (replies, errbacks, dead letter reports), the reader of
    the replies' stream, and its recovery beside the consumer."""

    def apply(task: CeleryTask, payload: Any, schema: type[M],
              apply: Callable[[Engine, M], list[int]]) -> None:
        message = _accept(app, task.name, payload, schema)
        if message is None:
            return
        try:
            owed = apply(db.engine, message)
        except Exception as exc:
            if not database_trouble(exc):
                raise
            raise _later(task, message.order_id, exc) from exc
        try:
            outbox.flush(app, db, owed)
        except Exception:  # the reply is applied; what it owes stays owed for the relay
            log.exception("publishing after order_id=%s failed; left to the relay",
                          message.order_id)

    @app.task(name=Task.STEP_RESULT, base=DeadLetteringTask, bind=True, max_retries=None,
              shared=False, lazy=False)
    def step_result(self: CeleryTask, payload: Any) -> None:
        apply(self, payload, StepReply, replies.on_reply)

    @app.task(name=Task.STEP_FAILED, base=DeadLetteringTask, bind=True, max_retries=None,
              shared=False, lazy=False)
    def step_failed(self: CeleryTask, payload: Any) -> None:
        if not self.request.retries:  # said once, not on every retry of a database outage
            log.warning("step raised %s", json.dumps(payload, default=str)[:500])
        apply(self, payload, StepFailed, replies.on_step_crashed)

    @app.task(name=Task.DEAD_LETTER, base=DeadLetteringTask, bind=True, max_retries=None,
              shared=False, lazy=False)
    def dead_letter(self: CeleryTask, payload: Any) -> None:
        apply(self, payload, DeadLetterReport, dead_letter_reports.receive)

    app.steps["worker"].add(recovery_step(app, db, settings))
    app.steps["worker"].add(reply_reader.reader_step(app, db))


def _accept(app: SagaApp, task: str, payload: Any, schema: type[M]) -> M | None:
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        app.dead_letters.record(task, None, payload, str(exc))
        return None


# Retrying through Celery, not autoretry_for: our own line says which order waits, where Celery's
# "retry" line is INFO in the logger the workers quiet (runtime.celery_app).
def _later(task: CeleryTask, order_id: str | None, exc: Exception) -> BaseException:
    """A reply is applied in the saga's database; trouble there that may pass (a locked SQLite
    file, a PostgreSQL restart) retries it with backoff instead of losing it: applying a reply
    twice is harmless (replies.py), and one lost after the order closed is never swept up."""
    countdown = backoff_s(1, task.request.retries, jitter=True)
    log.warning("saga database unavailable order_id=%s task=%s retry_in_s=%.1f: %s",
                order_id, task.name, countdown, str(exc).splitlines()[0])
    retry: BaseException = task.retry(exc=exc, countdown=countdown, **brief(order_id))
    return retry


def recover(app: SagaApp, db: Database, settings: Settings, stop: threading.Event) -> None:
    """The saga worker's background duty: publish what is owed, drive what stalled."""
    # replies that queued up while no saga worker ran are applied before anything is judged
    # stalled: the sweeper starts one step deadline after the worker
    sweep_from = time.monotonic() + settings.step_deadline_s
    while not stop.wait(settings.relay_interval_s):
        try:
            outbox.relay(app, db, settings.relay_grace_s)
            if time.monotonic() >= sweep_from:
                owed = sweeper.sweep(db.engine, settings.step_deadline_s,
                                     settings.saga_deadline_s)
                outbox.flush(app, db, owed)
        except Exception:  # keep going: the next round may find the broker or DB back
            log.exception("relay/sweep round failed")


def recovery_step(app: SagaApp, db: Database, settings: Settings) -> type[bootsteps.StartStopStep]:
    """A worker bootstep: the relay and the sweeper run in a thread of the saga worker's main
    process from its start to its stop (the API, which builds the same app, runs no worker)."""
    stopping = threading.Event()

    class Recovery(bootsteps.StartStopStep):
        # Celery's Consumer step is `last`, and its start blocks for the worker's life: this one
        # starts before it, so the sweeper's grace (recover) counts from just before consuming.
        def start(self, parent: Any) -> None:
            threading.Thread(target=recover, args=(app, db, settings, stopping),
                             name="relay-and-sweeper", daemon=True).start()

        def stop(self, parent: Any) -> None:
            stopping.set()

        def terminate(self, parent: Any) -> None:
            stopping.set()  # a cold shutdown ends the rounds too (the thread is a daemon anyway)

    return Recovery
