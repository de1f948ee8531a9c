import sys

from runtime.cli import ServiceCli
from services.inventory.bootstrap import bootstrap
from services.inventory.handlers import seed
from services.inventory.models import MIGRATIONS

cli = ServiceCli(
    name="inventory",
    description="Inventory service: reserves stock for orders and releases it.",
    migrations=MIGRATIONS, bootstrap=bootstrap, seed=seed)

if __name__ == "__main__":
    sys.exit(cli.main())
