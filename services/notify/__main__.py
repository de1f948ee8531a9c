import sys

from contracts.runtime.cli import ServiceCli
from services.notify.db import MIGRATIONS, sessions
from services.notify.models import DeadLetter
from services.notify.settings import get_settings


def _app():  # type: ignore[no-untyped-def]
    from services.notify.tasks import app
    return app


cli = ServiceCli(
    name="notify",
    description="Notify service: sends each order's confirmation or failure e-mail over SMTP.",
    database_url=lambda: get_settings().database_url, migrations=MIGRATIONS, app=_app,
    sessions=sessions, dead_letter_model=DeadLetter)

if __name__ == "__main__":
    sys.exit(cli.main())
