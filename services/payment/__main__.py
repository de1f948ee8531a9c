import sys

from runtime.cli import ServiceCli
from services.payment.bootstrap import bootstrap
from services.payment.models import MIGRATIONS

cli = ServiceCli(
    name="payment",
    description="Payment service: authorizes orders through the card gateway and refunds them.",
    migrations=MIGRATIONS, bootstrap=bootstrap)

if __name__ == "__main__":
    sys.exit(cli.main())
