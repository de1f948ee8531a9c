"""The notify steps: validate at the door, call the handler, report (runtime.step.SagaStep)."""
from sqlalchemy import Engine

from contracts.messages import SendCancellationNotice, SendFailureNotice, StockReserved
from contracts.names import Task
from runtime.celery_app import SagaApp
from runtime.outcome import StepOutcome
from services.notify import handlers
from services.notify.handlers import Mailer
from services.notify.settings import Settings


def register(app: SagaApp, db: Engine, mailer: Mailer, settings: Settings) -> None:
    # persistent: an SMTP outage is waited out, never turned into a failed order.
    @app.step(Task.SEND_CONFIRMATION, message=StockReserved, persistent=True,
              retry_backoff_s=settings.retry_backoff_s)
    def order_confirmed(msg: StockReserved) -> StepOutcome:
        return handlers.send_confirmation(msg, db, mailer, settings.mail_from)

    @app.step(Task.SEND_FAILURE_NOTICE, message=SendFailureNotice, persistent=True,
              retry_backoff_s=settings.retry_backoff_s)
    def order_failed(msg: SendFailureNotice) -> StepOutcome:
        return handlers.send_failure_notice(msg, db, mailer, settings.mail_from)

    @app.step(Task.SEND_CANCELLATION_NOTICE, message=SendCancellationNotice, persistent=True,
              retry_backoff_s=settings.retry_backoff_s)
    def order_cancelled(msg: SendCancellationNotice) -> StepOutcome:
        return handlers.send_cancellation_notice(msg, db, mailer, settings.mail_from)
