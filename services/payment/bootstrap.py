"""The payment process's composition root: every part of it, built once, in one place."""
from dataclasses import dataclass

from runtime.process import Process, parts
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
    db, dead_letters, app = parts("payment", settings, DeadLetter)
    gateway = SandboxGateway(db.engine, settings.gateway_latency_ms, settings.gateway_timeout_ms)
    tasks.register(app, db.engine, gateway, settings)
    return Payment(settings, db, dead_letters, app, gateway)
