"""The saga worker's entry points: replies and errbacks in, decisions out through the outbox."""
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery.signals import worker_ready, worker_shutting_down
from celery.utils.time import get_exponential_backoff_interval
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from contracts.messages import StepFailed, StepReply
from contracts.names import Task
from contracts.runtime.app import MAX_RETRY_COUNTDOWN_S, brief
from contracts.runtime.step import StepRunner
from orchestrator import dispatch, replies, sweeper
from orchestrator.broker import app
from orchestrator.db import engine, sessions
from orchestrator.models import DeadLetter
from orchestrator.settings import get_settings

log = logging.getLogger("saga.worker")
M = TypeVar("M", StepReply, StepFailed)
dead_letters = StepRunner(sessions(), DeadLetter)


def _accept(task: Any, payload: Any, schema: type[BaseModel]) -> Any:
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        dead_letters.dead_letter(task.name, None, payload, str(exc))
        return None


# Retrying through Celery, not autoretry_for: our own line says which order waits, where Celery's
# "retry" line is INFO in the logger the workers quiet (contracts.runtime.app).
def _later(task: Any, order_id: str, exc: OperationalError) -> Exception:
    """A reply is applied in the saga's database; trouble there that may pass (a locked SQLite
    file, a PostgreSQL restart) retries it with backoff instead of losing it: applying a reply
    twice is harmless (replies.py), and one lost after the order closed is never swept up."""
    countdown = get_exponential_backoff_interval(1, task.request.retries, MAX_RETRY_COUNTDOWN_S,
                                                 full_jitter=True)
    log.warning("saga database unavailable order_id=%s task=%s retry_in_s=%.1f: %s",
                order_id, task.name, countdown, str(exc).splitlines()[0])
    return task.retry(exc=exc, countdown=countdown, **brief(order_id))


def _apply(task: Any, payload: Any, schema: type[M],
           apply: Callable[[Engine, M], list[int]]) -> None:
    message = _accept(task, payload, schema)
    if message is None:
        return
    try:
        owed = apply(engine(), message)
    except OperationalError as exc:
        raise _later(task, message.order_id, exc)
    dispatch.flush(app, sessions(), owed)


@app.task(name=Task.STEP_RESULT, bind=True, max_retries=None)
def step_result(self: Any, payload: Any) -> None:
    _apply(self, payload, StepReply, replies.on_reply)


@app.task(name=Task.STEP_FAILED, bind=True, max_retries=None)
def step_failed(self: Any, payload: Any) -> None:
    if not self.request.retries:  # said once, not on every retry of a database outage
        log.warning("step raised %s", json.dumps(payload, default=str)[:500])
    _apply(self, payload, StepFailed, replies.on_step_crashed)


_stop = threading.Event()


def _recover_forever() -> None:
    """The saga worker's background duty: publish what is owed, drive what stalled."""
    settings = get_settings()
    # replies that queued up while no saga worker ran are applied before anything is judged
    # stalled: the sweeper starts one step deadline after the worker
    sweep_from = time.monotonic() + settings.step_deadline_s
    while not _stop.wait(settings.relay_interval_s):
        try:
            dispatch.relay(app, sessions(), settings.relay_grace_s)
            if time.monotonic() >= sweep_from:
                owed = sweeper.sweep(engine(), settings.step_deadline_s,
                                     settings.saga_deadline_s)
                dispatch.flush(app, sessions(), owed)
        except Exception:  # keep going: the next round may find the broker or DB back
            log.exception("relay/sweep round failed")


@worker_ready.connect
def _start_recovery(**_: Any) -> None:
    threading.Thread(target=_recover_forever, name="relay-and-sweeper", daemon=True).start()


@worker_shutting_down.connect
def _stop_recovery(**_: Any) -> None:
    _stop.set()
