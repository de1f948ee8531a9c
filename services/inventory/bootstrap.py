"""The inventory process's composition root: every part of it, built once, in one place."""
from dataclasses import dataclass

from runtime.celery_app import make_app
from runtime.db import Database
from runtime.deadletters import DeadLetters
from runtime.process import Process
from services.inventory import tasks
from services.inventory.models import DeadLetter
from services.inventory.settings import Settings


@dataclass(frozen=True)
class Inventory(Process):
    settings: Settings


def bootstrap(settings: Settings | None = None) -> Inventory:
    settings = settings or Settings()
    db = Database.at(settings.database_url)
    dead_letters = DeadLetters(db.sessions, DeadLetter)
    app = make_app("inventory", settings.redis_url, dead_letters)
    tasks.register(app, db.engine, settings)
    return Inventory(settings, db, dead_letters, app)
