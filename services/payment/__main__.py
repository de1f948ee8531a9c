import sys

from contracts.runtime.cli import ServiceCli
from services.payment.db import MIGRATIONS, sessions
from services.payment.models import DeadLetter
from services.payment.settings import get_settings


def _app():  # type: ignore[no-untyped-def]
    from services.payment.tasks import app
    return app


cli = ServiceCli(
    name="payment",
    description="Payment service: authorizes orders through the card gateway and refunds them.",
    database_url=lambda: get_settings().database_url, migrations=MIGRATIONS, app=_app,
    sessions=sessions, dead_letter_model=DeadLetter)

if __name__ == "__main__":
    sys.exit(cli.main())
