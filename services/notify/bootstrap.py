"""The notify process's composition root: every part of it, built once, in one place."""
from dataclasses import dataclass

from runtime.process import Process, parts
from services.notify import tasks
from services.notify.mailer import SmtpMailer
from services.notify.models import DeadLetter
from services.notify.settings import Settings


@dataclass(frozen=True)
class Notify(Process):
    settings: Settings
    mailer: SmtpMailer


def bootstrap(settings: Settings | None = None) -> Notify:
    settings = settings or Settings()
    db, dead_letters, app = parts("notify", settings, DeadLetter)
    mailer = SmtpMailer(settings.smtp_host, settings.smtp_port, settings.smtp_timeout_s)
    tasks.register(app, db.engine, mailer, settings)
    return Notify(settings, db, dead_letters, app, mailer)
