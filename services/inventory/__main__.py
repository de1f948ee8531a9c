import sys

from contracts.runtime.cli import ServiceCli
from services.inventory.db import MIGRATIONS, sessions
from services.inventory.handlers import seed
from services.inventory.models import DeadLetter
from services.inventory.settings import get_settings


def _app():  # type: ignore[no-untyped-def]
    from services.inventory.tasks import app
    return app


cli = ServiceCli(
    name="inventory",
    description="Inventory service: reserves stock for orders and releases it.",
    database_url=lambda: get_settings().database_url, migrations=MIGRATIONS, app=_app,
    sessions=sessions, dead_letter_model=DeadLetter, seed=seed)

if __name__ == "__main__":
    sys.exit(cli.main())
