"""Every service compose would build from our Dockerfile, run as a local process with exactly the
`command` and `environment` compose gives it, except that the compose hostnames are pointed at
local stand-ins (an embedded redis-server, our own PostgreSQL databases, an SMTP drop instead of
Mailpit) and that each replica gets its own hostname, as each container does. The images compose
pulls (redis, postgres, mailpit, flower) are not run."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.engine import make_url

from devstack.smtp import MailDropServer, read_mails
from devstack.supervisor import Supervisor
from tests.support.compose import (
    DATABASES,
    REPO_ROOT,
    SERVERS,
    TERMINAL,
    host_in,
    one_shots,
    ours,
    seconds,
)
from tests.support.waiting import wait_for

# -- e2e: each compose service's command as a local process, inventory x4 ---------------------

def localize(service: str, env: dict[str, str], *, redis_url: str, databases: dict[str, str],
             smtp_port: int, api_port: int, metrics_port: Callable[[], int]) -> dict[str, str]:
    """The service's compose environment with the compose hostnames pointed at local stand-ins."""
    local = {}
    for key, value in env.items():
        if key == "REDIS_URL":
            assert urlsplit(value).hostname == "redis", value
            value = redis_url
        elif key.endswith("_DATABASE_URL"):
            url = make_url(value)
            assert url.host == "postgres", value
            value = databases[str(url.database)]
        elif key == "SMTP_HOST":
            assert value == "mailpit"
            value = "127.0.0.1"
        elif key == "SMTP_PORT":
            assert value == "1025"
            value = str(smtp_port)
        elif key == "API_HOST":
            value = "127.0.0.1"  # 0.0.0.0 in a container; on this machine, loopback only
        elif key == "API_PORT":
            value = str(api_port)
        elif key == "WORKER_METRICS_PORT":
            # one per container there, one machine here: each replica a port of its own
            assert value == "9100"
            value = str(metrics_port())
        local[key] = value
    for key, value in local.items():
        assert host_in(value) not in SERVERS, f"{service}: {key}={value} still names a compose host"
    return local


def compose_check_argv(test: list[str]) -> list[str]:
    """A compose healthcheck `test` as argv; `$$` is compose's escape for a literal `$`."""
    kind, *rest = [part.replace("$$", "$") for part in test]
    return ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest


class LocalCompose:
    """Runs our compose services as processes: one-shots to completion, the rest supervised."""

    def __init__(self, services: dict[str, dict[str, Any]], workdir: Path,
                 local_env: Callable[[str], dict[str, str]], scale: dict[str, int],
                 api_url: str) -> None:
        self.services = services
        self.api_url = api_url
        self.workdir = workdir
        self.local_env = local_env
        self.scale = scale
        self.output = open(workdir / "processes.log", "w")  # noqa: SIM115 (closed in stop)
        self.supervisor = Supervisor(log_dir=workdir / "log", out=self.output, cwd=workdir)
        self.replicas: dict[str, tuple[str, list[str], dict[str, str]]] = {}
        bin_dir = str(Path(sys.executable).parent)
        self.base_env = {"PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
                         "HOME": str(workdir), "LANG": "C.UTF-8",
                         "PYTHONPATH": str(REPO_ROOT),  # /app in the image
                         "PYTHONUNBUFFERED": "1"}

    def env_for(self, service: str, hostname: str) -> dict[str, str]:
        # HOSTNAME: what Docker sets in a container (the healthchecks read it)
        return {**self.base_env, "HOSTNAME": hostname, **self.local_env(service)}

    def start(self) -> None:
        migrations = sorted(one_shots(self.services))
        with ThreadPoolExecutor(len(migrations)) as pool:
            list(pool.map(lambda name: self.supervisor.run_once(
                name, self.services[name]["command"], env=self.env_for(name, f"{name}-1"),
                timeout=120), migrations))
        for service in sorted(ours(self.services) - set(migrations)):
            count = self.scale.get(service, 1)
            for index in range(1, count + 1):
                name = f"{service}-{index}"
                # each container has its own hostname: that is what makes `-n inventory@%h` unique
                argv = [arg.replace("%h", name) for arg in self.services[service]["command"]]
                env = self.env_for(service, name)
                self.replicas[name] = (service, argv, env)
                self.supervisor.add(name, argv, env=env, restart=False)

    def wait_healthy(self, timeout: float) -> None:
        """Each replica's own compose healthcheck, retried (like Docker does) until it passes.

        What is checked is that the command works against the running process; how fast it
        answers is this (shared, possibly busy) machine's business, so an attempt may take longer
        than the compose `timeout`, and only two run at once.
        """
        deadline = time.monotonic() + timeout
        failures: dict[str, str] = {}

        def check(name: str) -> None:
            service, _, env = self.replicas[name]
            argv = compose_check_argv(self.services[service]["healthcheck"]["test"])
            while True:
                try:
                    result = subprocess.run(argv, env=env, cwd=self.workdir, capture_output=True,
                                            text=True, timeout=60)
                    if result.returncode == 0:
                        failures.pop(name, None)
                        return
                    failures[name] = (result.stdout + result.stderr)[-500:]
                except subprocess.TimeoutExpired:
                    failures[name] = "no answer within 60 s"
                if time.monotonic() > deadline or self.supervisor.pid(name) is None:
                    return
                time.sleep(0.5)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(check, sorted(self.replicas)))
        assert not failures, (f"healthchecks failing: {failures}\n"
                              f"{self.supervisor.recent_output(lines=30)}")

    @contextmanager
    def explained(self) -> Iterator[None]:
        """A failed assertion comes with what every process said last."""
        try:
            yield
        except AssertionError as error:
            raise AssertionError(f"{error}\n\nfull output of each process: {self.workdir / 'log'}"
                                 f"\n{self.supervisor.recent_output(lines=15)}") from error

    def stop(self) -> None:
        try:
            self.supervisor.stop(timeout=30)  # the compose stop_grace_period
        finally:
            self.output.close()


@pytest.fixture
def local_compose(services: dict[str, dict[str, Any]], tmp_path: Path, redis_db: str,
                  maildrop: MailDropServer, make_pg_database: Callable[[], str],
                  free_port: Callable[[], int]) -> Iterator[LocalCompose]:
    databases = {name: make_pg_database() for name in DATABASES}
    api_port = free_port()

    def local_env(service: str) -> dict[str, str]:
        return localize(service, services[service].get("environment") or {},
                        redis_url=redis_db, databases=databases, smtp_port=maildrop.port,
                        api_port=api_port, metrics_port=free_port)

    stack = LocalCompose(services, tmp_path, local_env, scale={"inventory": 4},
                         api_url=f"http://127.0.0.1:{api_port}")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def order_body(index: int) -> dict[str, Any]:
    sku, token = "BOOK-1", "tok_visa"
    if index % 10 == 3:
        token = "tok_chargeDeclined"
    elif index % 10 == 7:
        sku = "SOLDOUT-1"
    return {"customer_email": f"buyer{index}@example.com",
            "items": [{"sku": sku, "quantity": 1}], "payment_token": token}


def expected_outcome(index: int) -> tuple[str, str | None]:
    return {3: ("failed", "payment_declined"), 7: ("failed", "out_of_stock")}.get(
        index % 10, ("confirmed", None))


@pytest.mark.timeout(300)
def test_compose_services_run_locally_with_inventory_scaled_to_four(
        local_compose: LocalCompose, services: dict[str, dict[str, Any]],
        maildrop: MailDropServer) -> None:
    with local_compose.explained():
        run_orders_through(local_compose, services, maildrop)


def run_orders_through(stack: LocalCompose, services: dict[str, dict[str, Any]],
                       maildrop: MailDropServer) -> None:
    inventory = sorted(name for name, (svc, _, _) in stack.replicas.items() if svc == "inventory")
    assert len(inventory) == 4
    stack.wait_healthy(timeout=120)

    orders: dict[str, int] = {}
    finished: dict[str, dict[str, Any]] = {}

    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as api:
        def place(index: int) -> None:
            response = api.post("/orders", json=order_body(index))
            assert response.status_code == 202, response.text
            orders[response.json()["id"]] = index

        def all_terminal() -> bool:
            for order_id in [o for o in orders if o not in finished]:
                order = api.get(f"/orders/{order_id}").json()
                if order["status"] in TERMINAL:
                    finished[order_id] = order
            return len(finished) == len(orders)

        def handled_by(order: dict[str, Any]) -> list[str]:
            return [s["detail"]["worker"] for s in order["steps"]
                    if s["name"] == "inventory.reserve" and s.get("detail", {}).get("worker")]

        with ThreadPoolExecutor(8) as pool:
            # 100 orders with four inventory consumers
            list(pool.map(place, range(100)))
            wait_for(all_terminal, 90, what="the first 100 orders to end")
            first_half = Counter(w for o in finished.values() for w in handled_by(o))
            # then 100 more, and a scale-down to three while they flow: `docker compose up
            # --scale inventory=3` sends SIGTERM to one container's PID 1
            later = [pool.submit(place, index) for index in range(100, 200)]
            wait_for(lambda: len(orders) >= 120, 30, what="orders to flow")
            victim = inventory[-1]
            pid = stack.supervisor.pid(victim)
            assert pid is not None, stack.supervisor.recent_output(victim)
            stopped_at = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            for future in later:
                future.result()
        wait_for(all_terminal, 120, what="all 200 orders to end")
        grace = seconds(services["inventory"]["stop_grace_period"])
        wait_for(lambda: stack.supervisor.pid(victim) is None, grace,
                 what=f"{victim} to stop within the stop_grace_period ({grace:g} s)")
        stop_took = time.monotonic() - stopped_at

    # every order ended, the way its card and stock say it must
    assert len(finished) == 200
    outcomes = {(o["status"], o["reason"]) for o in finished.values()}
    for order_id, order in finished.items():
        assert (order["status"], order["reason"]) == expected_outcome(orders[order_id]), order

    # the inventory work was shared by all four consumers of the queue
    counts = Counter(w for o in finished.values() for w in handled_by(o))
    nodes = {f"inventory@{name}" for name in inventory}
    assert set(counts) == nodes, counts
    assert all(first_half[node] > 0 for node in nodes), first_half
    reaching_inventory = sum(1 for i in orders.values() if i % 10 != 3)
    assert sum(1 for o in finished.values() if handled_by(o)) == reaching_inventory

    # the scale-down lost nothing: the stopped worker exited cleanly, nobody else crashed, and
    # every order got its one e-mail
    assert f"--- {victim} (exit code 0) ---" in stack.supervisor.recent_output(victim, lines=1)
    others = [name for name in stack.replicas if name != victim]
    assert all(stack.supervisor.pid(name) is not None for name in others), \
        stack.supervisor.recent_output()

    def one_mail_each() -> bool:
        subjects = [str(m["Subject"]) for m in read_mails(maildrop.maildir)]
        per_order = {oid: sum(oid in s for s in subjects) for oid in orders}
        assert max(per_order.values()) <= 1, "an order got two e-mails"
        return min(per_order.values()) == 1
    wait_for(one_mail_each, 60, what="one e-mail per order")

    print(f"\ninventory.reserve per worker (200 orders; {reaching_inventory} reach inventory; "
          f"{victim} got SIGTERM once ~120 orders were placed and exited after {stop_took:.1f} s):")
    for node in sorted(nodes):
        print(f"  {node}: {counts[node]} (first 100 orders: {first_half[node]})")
    print(f"  outcomes: {sorted(outcomes)}")
