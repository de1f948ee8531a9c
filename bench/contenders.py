"""Starting and stopping the bench's plain contenders: the hand-rolled chain (bench/handrolled.py:
its API and three workers) and DBOS (bench/dbos_peer.py: one process), each with its own
databases, its own embedded SMTP server (in the bench's process, as the saga's stack has it) and,
for the chain, the bench's redis-server."""
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import effects
from bench.children import NullOut, wait_http, wait_workers_ready
from devstack.net import free_port
from devstack.smtp import MailDropServer
from devstack.stack import REPO_ROOT
from devstack.supervisor import Supervisor


@dataclass(frozen=True)
class Kind:
    module: str
    env_prefix: str  # its database URLs are PREFIX_ORDERS_URL, PREFIX_PAYMENT_URL, ...
    queues: tuple[str, ...]  # one worker process per queue
    system_database: bool  # a database of its own runtime (DBOS's system database)


KINDS = {
    "handrolled": Kind("bench.handrolled", "HANDROLLED", ("payment", "inventory", "notify"), False),
    "dbos": Kind("bench.dbos_peer", "DBOS", (), True),
}
PARTS = ("orders", "payment", "inventory")


@dataclass(frozen=True)
class Running:
    api_url: str
    orders_url: str  # what the load driver's watcher reads
    env: dict[str, str]
    supervisor: Supervisor
    maildir: Path

    def pids(self) -> dict[str, int | None]:
        return {name: self.supervisor.pid(name) for name in self.supervisor.names}


@contextmanager
def running(kind: str, work: Path, env: Mapping[str, str], database: Callable[[str], str],
            stock: Mapping[str, int]) -> Iterator[Running]:
    """`database(part)`: a URL for the contender's database of that part (orders, payment,
    inventory, and `system` for DBOS's own)."""
    spec = KINDS[kind]
    urls = {part: database(part) for part in PARTS}
    effects.create_schema(urls, dict(stock))
    smtp = MailDropServer(work / "mail")
    supervisor = Supervisor(log_dir=work / "log", out=NullOut(), cwd=REPO_ROOT, relay=False)
    try:
        smtp.start()
        child_env = {**env, "SMTP_HOST": smtp.host, "SMTP_PORT": str(smtp.port),
                     **{f"{spec.env_prefix}_{part.upper()}_URL": url for part, url in urls.items()}}
        if spec.system_database:
            child_env[f"{spec.env_prefix}_SYSTEM_DATABASE_URL"] = database("system")
        port = free_port()
        supervisor.add("api", [sys.executable, "-m", spec.module, "api", "--port", str(port)],
                       env=child_env)
        for queue in spec.queues:  # named like the saga's processes, for the CPU table
            supervisor.add(queue, [sys.executable, "-m", spec.module, "worker", queue],
                           env=child_env)
        api_url = f"http://127.0.0.1:{port}"
        wait_http(supervisor, f"{api_url}/healthz", timeout=120)
        wait_workers_ready(supervisor, spec.queues)
        yield Running(api_url, urls["orders"], child_env, supervisor, smtp.maildir)
    finally:
        try:
            supervisor.stop()
        finally:
            smtp.stop()
