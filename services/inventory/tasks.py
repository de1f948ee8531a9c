"""Celery entry points: validate at the door, call the handler, report. Nothing else."""
from typing import Any

from contracts.messages import PaymentAuthorized, ReleaseStock
from contracts.names import Task
from contracts.runtime.app import make_app
from contracts.runtime.step import StepRunner
from services.inventory import handlers
from services.inventory.db import engine, sessions
from services.inventory.models import DeadLetter
from services.inventory.settings import get_settings

settings = get_settings()
app = make_app("inventory", settings.redis_url)
runner = StepRunner(sessions(), DeadLetter, settings.retry_backoff_s)


@app.task(name=Task.RESERVE_STOCK, bind=True, max_retries=None)
def reserve(self: Any, payload: Any) -> dict[str, Any] | None:
    return runner.run(self, payload, PaymentAuthorized,
                      lambda msg: handlers.reserve(msg, engine()))


@app.task(name=Task.RELEASE_STOCK, bind=True, max_retries=None, persistent=True)
def release(self: Any, payload: Any) -> dict[str, Any] | None:
    return runner.run(self, payload, ReleaseStock, lambda msg: handlers.release(msg, engine()))
