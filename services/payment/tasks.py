"""Celery entry points: validate at the door, call the handler, report. Nothing else."""
from typing import Any

from contracts.messages import AuthorizePayment, RefundPayment
from contracts.names import Task
from contracts.runtime.app import make_app
from contracts.runtime.step import StepRunner
from services.payment import handlers
from services.payment.db import engine, sessions
from services.payment.gateway import SandboxGateway
from services.payment.models import DeadLetter
from services.payment.settings import get_settings

settings = get_settings()
app = make_app("payment", settings.redis_url)
runner = StepRunner(sessions(), DeadLetter, settings.retry_backoff_s)
gateway = SandboxGateway(engine(), settings.gateway_latency_ms, settings.gateway_timeout_ms)


# Gateway timeouts are retried PAYMENT_MAX_RETRIES times, then the order fails as unavailable.
@app.task(name=Task.AUTHORIZE_PAYMENT, bind=True, max_retries=None,
          retry_budget=settings.max_retries)
def authorize(self: Any, payload: Any) -> dict[str, Any] | None:
    return runner.run(self, payload, AuthorizePayment,
                      lambda msg: handlers.authorize(msg, engine(), gateway))


# A refund is a compensation: it never gives up (persistent), and asks for a person if stuck.
@app.task(name=Task.REFUND_PAYMENT, bind=True, max_retries=None, persistent=True)
def refund(self: Any, payload: Any) -> dict[str, Any] | None:
    return runner.run(self, payload, RefundPayment,
                      lambda msg: handlers.refund(msg, engine(), gateway))
