"""The payment steps: validate at the door, call the handler, report (runtime.step.SagaStep)."""
from sqlalchemy import Engine

from contracts.messages import AuthorizePayment, RefundPayment
from contracts.names import Task
from runtime.celery_app import SagaApp
from runtime.outcome import StepOutcome
from services.payment import handlers
from services.payment.gateway import Gateway
from services.payment.settings import Settings


def register(app: SagaApp, db: Engine, gateway: Gateway, settings: Settings) -> None:
    # Gateway timeouts are retried PAYMENT_MAX_RETRIES times, then the order fails as unavailable.
    @app.step(Task.AUTHORIZE_PAYMENT, message=AuthorizePayment,
              retry_budget=settings.max_retries, retry_backoff_s=settings.retry_backoff_s,
              exhausted_reason="payment_unavailable")
    def authorize(msg: AuthorizePayment) -> StepOutcome:
        return handlers.authorize(msg, db, gateway)

    # A refund is a compensation: it never gives up, and asks for a person if stuck.
    @app.step(Task.REFUND_PAYMENT, message=RefundPayment, persistent=True,
              retry_backoff_s=settings.retry_backoff_s)
    def refund(msg: RefundPayment) -> StepOutcome:
        return handlers.refund(msg, db, gateway)
