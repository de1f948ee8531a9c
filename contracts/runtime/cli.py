"""The command line every service offers: `python -m services.X migrate|worker|dead-letters`."""
import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from celery import Celery
from celery.signals import after_setup_logger
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from contracts.names import queue_of
from contracts.runtime.app import quiet_celery_task_lines
from contracts.runtime.store import migrate, revision
from contracts.runtime.store import utcnow


@dataclass(frozen=True)
class ServiceCli:
    name: str                      # also the queue it consumes
    description: str
    database_url: Callable[[], str]
    migrations: Path
    app: Callable[[], Celery]
    sessions: Callable[[], sessionmaker]  # type: ignore[type-arg]
    dead_letter_model: type
    seed: Callable[[sessionmaker], None] | None = None  # type: ignore[type-arg]
    default_concurrency: int = 8
    worker_command: str = "worker"
    package: str = ""  # for --help; services.<name> unless given
    extend: Callable[[Any], None] | None = None  # adds process-specific subcommands

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = self.parser().parse_args(argv)
        return int(args.run(args) or 0)

    def parser(self) -> argparse.ArgumentParser:
        package = self.package or f"services.{self.name}"
        parser = argparse.ArgumentParser(prog=f"python -m {package}", description=self.description)
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

        p = sub.add_parser("migrate", help="upgrade the database to the latest schema (and seed it)")
        p.set_defaults(run=self.migrate)

        p = sub.add_parser("revision", help="developers: autogenerate a migration from the models")
        p.add_argument("-m", "--message", required=True)
        p.set_defaults(run=lambda a: revision(self.migrations, a.message))

        p = sub.add_parser(self.worker_command, help=f"consume the '{self.name}' queue")
        p.add_argument("--pool", default=os.environ.get("WORKER_POOL", "threads"),
                       choices=["threads", "prefork", "solo"],
                       help="threads suits steps that wait on I/O (default: $WORKER_POOL or "
                            "%(default)s)")
        p.add_argument("--concurrency", "-c", type=int,
                       default=int(os.environ.get("WORKER_CONCURRENCY", self.default_concurrency)),
                       help="tasks run at once (default: $WORKER_CONCURRENCY or %(default)s)")
        p.add_argument("--hostname", "-n", default=f"{self.name}@%h",
                       help="unique node name; %%h is the host (default: %(default)s)")
        p.add_argument("--loglevel", "-l", default="INFO")
        p.set_defaults(run=self.worker)

        p = sub.add_parser("dead-letters", help="list or re-drive messages this service could not process")
        dl = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        ls = dl.add_parser("list", help="print the dead letters as JSON lines")
        ls.add_argument("--all", action="store_true", help="include those already re-driven")
        ls.set_defaults(run=self.list_dead_letters)
        rt = dl.add_parser("retry", help="send a dead letter's payload to its task again")
        rt.add_argument("id", type=int)
        rt.set_defaults(run=self.retry_dead_letter)
        if self.extend is not None:
            self.extend(sub)
        return parser

    def migrate(self, _args: argparse.Namespace) -> None:
        migrate(self.database_url(), self.migrations)
        if self.seed is not None:
            self.seed(self.sessions())
        print(f"{self.name}: database at head")

    def worker(self, args: argparse.Namespace) -> None:
        after_setup_logger.connect(quiet_celery_task_lines, weak=False)
        self.app().worker_main([
            "worker", "-Q", self.name, "-n", args.hostname, "--pool", args.pool,
            "-c", str(args.concurrency), "-l", args.loglevel,
            # gossip and mingle only slow the start down; nothing here uses them
            "--without-gossip", "--without-mingle",
        ])

    def list_dead_letters(self, args: argparse.Namespace) -> None:
        model = self.dead_letter_model
        with self.sessions().begin() as session:
            query = select(model).order_by(model.id)
            if not args.all:
                query = query.where(model.retried_at.is_(None))
            for row in session.scalars(query):
                print(json.dumps({"id": row.id, "task": row.task, "order_id": row.order_id,
                                  "created_at": row.created_at.isoformat(), "error": row.error,
                                  "payload": row.payload, "retried_at": row.retried_at and
                                  row.retried_at.isoformat()}))

    def retry_dead_letter(self, args: argparse.Namespace) -> int:
        with self.sessions().begin() as session:
            row = session.get(self.dead_letter_model, args.id)
            if row is None:
                print(f"no dead letter {args.id}")
                return 1
            try:
                queue_of(row.task)
                payload = json.loads(row.payload)
            except ValueError:
                print(f"dead letter {args.id} is not a message of ours ({row.task}): "
                      "nothing to re-drive it to; it stays listed for the record")
                return 1
            self.app().send_task(row.task, args=(payload,))
            row.retried_at = utcnow()
        print(f"re-sent dead letter {args.id} to {row.task}")
        return 0
