"""What every composition root builds: the parts of one process, each made once."""
from dataclasses import dataclass

from runtime.celery_app import SagaApp, make_app
from runtime.db import Database
from runtime.deadletters import DeadLetterMixin, DeadLetters
from runtime.metrics import metrics_step
from runtime.rabbitmq import drain_step
from runtime.reporting import reporter_step
from runtime.settings import ProcessSettings
from runtime.watchdog import watchdog_step


@dataclass(frozen=True)
class Process:
    """A process's settings, database, dead letters and Celery app. A service's `bootstrap()`
    returns a subclass that adds its collaborators (the gateway, the mailer)."""

    settings: ProcessSettings
    db: Database
    dead_letters: DeadLetters
    app: SagaApp


def parts(main: str, settings: ProcessSettings,
          dead_letter_model: type[DeadLetterMixin]) -> tuple[Database, DeadLetters, SagaApp]:
    """What every process has, built alike: its database, its dead letters there, and its
    Celery app (`main` names it) sending them there; its worker reports them to the saga, and
    serves its metrics when WORKER_METRICS_PORT is set, and stops if its consumer stalls."""
    db = Database.at(settings.database_url, settings.database_timeout_s)
    dead_letters = DeadLetters(db.sessions, dead_letter_model)
    app = make_app(main, settings.broker, dead_letters)
    app.steps["worker"].add(reporter_step(main, dead_letters))
    app.steps["worker"].add(watchdog_step(settings.broker, main, settings.worker_stall_s))
    if app.dead_letter_exchange:
        app.steps["worker"].add(drain_step(main, dead_letters))
    if settings.worker_metrics_port is not None:
        app.steps["worker"].add(metrics_step(settings.worker_metrics_port))
    return db, dead_letters, app
