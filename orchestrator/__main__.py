import argparse
import sys

from orchestrator.bootstrap import bootstrap
from orchestrator.catalog import seed
from orchestrator.models import MIGRATIONS
from orchestrator.settings import Settings
from runtime.cli import ServiceCli


def _serve(args: argparse.Namespace) -> None:
    import uvicorn
    settings = Settings()
    # a factory, so that each of --workers builds its own process (orchestrator.api:factory)
    uvicorn.run("orchestrator.api:factory", factory=True,
                host=args.host or settings.api_host, port=args.port or settings.api_port,
                workers=args.workers, log_level="info",
                # one line per order of our own ("order received"), not one per request
                access_log=False)


def _api_command(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("api", help="serve the HTTP API (API_HOST, API_PORT)")
    p.add_argument("--host", help="default: $API_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default: $API_PORT or 8000")
    p.add_argument("--workers", type=int, default=1, help="uvicorn processes (default: 1)")
    p.set_defaults(run=_serve)


cli = ServiceCli(
    name="saga", package="orchestrator", worker_command="saga-worker",
    description="Order saga orchestrator: the HTTP API and the saga worker that drives each "
                "order through payment, inventory and e-mail, compensating failures.",
    migrations=MIGRATIONS, bootstrap=bootstrap, seed=seed, extend=_api_command)

if __name__ == "__main__":
    sys.exit(cli.main())
