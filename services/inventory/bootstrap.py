"""The inventory process's composition root: every part of it, built once, in one place."""
from dataclasses import dataclass

from runtime.process import Process, parts
from services.inventory import tasks
from services.inventory.models import DeadLetter
from services.inventory.settings import Settings


@dataclass(frozen=True)
class Inventory(Process):
    settings: Settings


def bootstrap(settings: Settings | None = None) -> Inventory:
    settings = settings or Settings()
    db, dead_letters, app = parts("inventory", settings, DeadLetter)
    tasks.register(app, db.engine, settings)
    return Inventory(settings, db, dead_letters, app)
