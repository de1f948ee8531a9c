"""The orchestrator's composition root: the API and the saga worker are built here, once, from
the settings; nothing connects or reads a setting at import. (The API's uvicorn factory is
`orchestrator.api:factory`, so that the saga worker never loads FastAPI.)"""
from dataclasses import dataclass

from orchestrator import tasks
from orchestrator.models import DeadLetter
from orchestrator.outbox import Publisher
from orchestrator.settings import Settings
from runtime.process import Process, parts


@dataclass(frozen=True)
class Orchestrator(Process):
    settings: Settings
    publisher: Publisher  # the API publishes new orders off the request path


def bootstrap(settings: Settings | None = None) -> Orchestrator:
    settings = settings or Settings()
    # the API publishes with this app, the saga worker consumes with it
    db, dead_letters, app = parts("saga", settings, DeadLetter)
    tasks.register(app, db, settings)
    return Orchestrator(settings, db, dead_letters, app, Publisher(app, db.sessions))

