"""What every composition root builds: the parts of one process, each made once."""
from dataclasses import dataclass

from runtime.celery_app import SagaApp
from runtime.db import Database
from runtime.deadletters import DeadLetters
from runtime.settings import ProcessSettings


@dataclass(frozen=True)
class Process:
    """A process's settings, database, dead letters and Celery app. A service's `bootstrap()`
    returns a subclass that adds its collaborators (the gateway, the mailer)."""

    settings: ProcessSettings
    db: Database
    dead_letters: DeadLetters
    app: SagaApp
