"""The notify process's composition root: every part of it, built once, in one place."""
from dataclasses import dataclass

from runtime.celery_app import make_app
from runtime.db import Database
from runtime.deadletters import DeadLetters
from runtime.process import Process
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
    db = Database.at(settings.database_url)
    dead_letters = DeadLetters(db.sessions, DeadLetter)
    app = make_app("notify", settings.redis_url, dead_letters)
    mailer = SmtpMailer(settings.smtp_host, settings.smtp_port, settings.smtp_timeout_s)
    tasks.register(app, db.engine, mailer, settings)
    return Notify(settings, db, dead_letters, app, mailer)
