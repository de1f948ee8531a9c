import sys

from runtime.cli import ServiceCli
from services.notify.bootstrap import bootstrap
from services.notify.models import MIGRATIONS

cli = ServiceCli(
    name="notify",
    description="Notify service: sends each order's confirmation or failure e-mail over SMTP.",
    migrations=MIGRATIONS, bootstrap=bootstrap)

if __name__ == "__main__":
    sys.exit(cli.main())
