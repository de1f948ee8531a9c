"""The saga worker's entry points: replies and errbacks in, decisions out through the outbox."""
import json
import logging
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutting_down
from pydantic import BaseModel, ValidationError

from contracts.messages import StepFailed, StepReply
from contracts.names import Task
from contracts.runtime.step import StepRunner
from orchestrator import dispatch, replies, sweeper
from orchestrator.broker import app
from orchestrator.db import engine, sessions
from orchestrator.models import DeadLetter
from orchestrator.settings import get_settings

log = logging.getLogger("saga.worker")
dead_letters = StepRunner(sessions(), DeadLetter)


def _accept(task: Any, payload: Any, schema: type[BaseModel]) -> Any:
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        dead_letters.dead_letter(task.name, None, payload, str(exc))
        return None


@app.task(name=Task.STEP_RESULT, bind=True)
def step_result(self: Any, payload: Any) -> None:
    reply = _accept(self, payload, StepReply)
    if reply is not None:
        dispatch.flush(app, sessions(), replies.on_reply(engine(), reply))


@app.task(name=Task.STEP_FAILED, bind=True)
def step_failed(self: Any, payload: Any) -> None:
    failed = _accept(self, payload, StepFailed)
    if failed is not None:
        log.warning("step raised %s", json.dumps(failed.model_dump()))
        dispatch.flush(app, sessions(), replies.on_step_crashed(engine(), failed))


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
