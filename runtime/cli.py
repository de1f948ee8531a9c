"""The command line every process offers: `python -m services.X migrate|worker|dead-letters`
(and the orchestrator's `api` and `saga-worker`). Each command builds the process once, through
its composition root."""
import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.signals import (
    after_setup_logger,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from sqlalchemy.orm import Session, sessionmaker

from runtime import tracing
from runtime.celery_app import quiet_celery_task_lines
from runtime.migrations import migrate, revision
from runtime.process import Process


@dataclass(frozen=True)
class ServiceCli:
    name: str                      # also the queue it consumes
    description: str
    migrations: Path
    bootstrap: Callable[[], Process]
    seed: "Callable[[sessionmaker[Session]], None] | None" = None
    default_concurrency: int = 8
    worker_command: str = "worker"
    package: str = ""  # for --help; services.<name> unless given
    extend: "Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None" = None

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = self.parser().parse_args(argv)
        return int(args.run(args) or 0)

    def parser(self) -> argparse.ArgumentParser:
        package = self.package or f"services.{self.name}"
        parser = argparse.ArgumentParser(prog=f"python -m {package}", description=self.description)
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

        p = sub.add_parser("migrate",
                           help="upgrade the database to the latest schema (and seed it)")
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

        p = sub.add_parser("dead-letters",
                           help="list or re-drive messages this service could not process")
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
        process = self.bootstrap()
        migrate(process.settings.database_url, self.migrations)
        if self.seed is not None:
            self.seed(process.db.sessions)
        print(f"{self.name}: database at head")

    def worker(self, args: argparse.Namespace) -> None:
        after_setup_logger.connect(quiet_celery_task_lines, weak=False)
        process = self.bootstrap()
        self._trace(process, args.pool)
        process.app.worker_main([
            "worker", "-Q", self.name, "-n", args.hostname, "--pool", args.pool,
            "-c", str(args.concurrency), "-l", args.loglevel,
            # gossip and mingle only slow the start down; nothing here uses them
            "--without-gossip", "--without-mingle",
        ])

    def _trace(self, process: Process, pool: str) -> None:
        """Tracing, when OTEL_EXPORTER_OTLP_* is set (runtime/tracing.py): in each pool child
        under prefork, where the tasks run (an export thread does not survive a fork), else in
        this process; what is buffered is exported when the process stops."""
        clients = [c for c in [getattr(process.app.guard, "client", None)] if c is not None]

        def configure(**_: Any) -> None:
            tracing.configure(self.name, process.db.engine, clients)

        if pool == "prefork":
            worker_process_init.connect(configure, weak=False)
            worker_process_shutdown.connect(lambda **_: tracing.shutdown(), weak=False)
        else:
            configure()
            worker_shutdown.connect(lambda **_: tracing.shutdown(), weak=False)

    def list_dead_letters(self, args: argparse.Namespace) -> None:
        for letter in self.bootstrap().dead_letters.list(include_retried=args.all):
            print(json.dumps(letter))

    def retry_dead_letter(self, args: argparse.Namespace) -> int:
        process = self.bootstrap()

        def send(task: str, payload: Any) -> None:
            process.app.send_task(task, args=(payload,))

        try:
            task = process.dead_letters.redrive(args.id, send)
        except LookupError as missing:
            print(missing.args[0])
            return 1
        print(f"re-sent dead letter {args.id} to {task}")
        return 0
