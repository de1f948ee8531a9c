"""The payment process's composition root: every part of it, built once, in one place."""
from dataclasses import dataclass

from runtime.celery_app import make_app
from runtime.db import Database
from runtime.deadletters import DeadLetters
from runtime.process import Process
from services.payment import tasks
from services.payment.gateway import SandboxGateway
from services.payment.models import DeadLetter
from services.payment.settings import Settings


@dataclass(frozen=True)
class Payment(Process):
    settings: Settings
    gateway: SandboxGateway


def bootstrap(settings: Settings | None = None) -> Payment:
    settings = settings or Settings()
    db = Database.at(settings.database_url)
    dead_letters = DeadLetters(db.sessions, DeadLetter)
    app = make_app("payment", settings.redis_url, dead_letters)
    gateway = SandboxGateway(db.engine, settings.gateway_latency_ms, settings.gateway_timeout_ms)
    tasks.register(app, db.engine, gateway, settings)
    return Payment(settings, db, dead_letters, app, gateway)
