"""Celery entry points: validate at the door, call the handler, report. Nothing else."""
from typing import Any

from contracts.messages import SendFailureNotice, StockReserved
from contracts.names import Task
from contracts.runtime.app import make_app
from contracts.runtime.step import StepRunner
from services.notify import handlers
from services.notify.db import engine, sessions
from services.notify.mailer import SmtpMailer
from services.notify.models import DeadLetter
from services.notify.settings import get_settings

settings = get_settings()
app = make_app("notify", settings.redis_url)
runner = StepRunner(sessions(), DeadLetter, settings.retry_backoff_s)
mailer = SmtpMailer(settings.smtp_host, settings.smtp_port, settings.smtp_timeout_s)


# persistent: an SMTP outage is waited out, never turned into a failed order.
@app.task(name=Task.SEND_CONFIRMATION, bind=True, max_retries=None, persistent=True)
def order_confirmed(self: Any, payload: Any) -> dict[str, Any] | None:
    return runner.run(self, payload, StockReserved, lambda msg: handlers.send_confirmation(
        msg, engine(), mailer, settings.mail_from))


@app.task(name=Task.SEND_FAILURE_NOTICE, bind=True, max_retries=None, persistent=True)
def order_failed(self: Any, payload: Any) -> dict[str, Any] | None:
    return runner.run(self, payload, SendFailureNotice, lambda msg: handlers.send_failure_notice(
        msg, engine(), mailer, settings.mail_from))
