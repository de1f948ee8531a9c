"""The inventory steps: validate at the door, call the handler, report (runtime.step.SagaStep)."""
from sqlalchemy import Engine

from contracts.messages import PaymentAuthorized, ReleaseStock
from contracts.names import Task
from runtime.celery_app import SagaApp
from runtime.outcome import StepOutcome
from services.inventory import handlers
from services.inventory.settings import Settings


def register(app: SagaApp, db: Engine, settings: Settings) -> None:
    @app.step(Task.RESERVE_STOCK, message=PaymentAuthorized,
              retry_backoff_s=settings.retry_backoff_s)
    def reserve(msg: PaymentAuthorized) -> StepOutcome:
        return handlers.reserve(msg, db)

    # A release is a compensation: it never gives up, and asks for a person if stuck.
    @app.step(Task.RELEASE_STOCK, message=ReleaseStock, persistent=True,
              retry_backoff_s=settings.retry_backoff_s)
    def release(msg: ReleaseStock) -> StepOutcome:
        return handlers.release(msg, db)
