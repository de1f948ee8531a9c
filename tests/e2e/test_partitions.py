"""Hosts, not just processes: the broker on one host, PostgreSQL on another, the API and the saga
worker on a third, each service's worker on a host of its own, all network namespaces on this
machine joined by a bridge (devstack.hosts). Faults are what a network does: packets dropped
both ways or one way (iptables), a lossy link, the broker's host frozen. After each, every order
placed during it ends as its card and stock dictate, with one e-mail, and no one restarted
anything."""
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack import hosts, postgres
from devstack.hosts import Host, Network
from devstack.postgres import PostgresCluster
from devstack.redis_server import EmbeddedRedis
from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.orders import mails_for, place_promptly, wait_terminal
from tests.support.waiting import wait_for

HOSTS = ["broker", "db", "app", "payment", "inventory", "notify"]
FAULT_S = 8.0


@dataclass
class Topology:
    net: Network
    broker: EmbeddedRedis
    stack: Stack
    mail: MailDropServer
    postgres: PostgresCluster


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    why = hosts.available() or postgres.available()
    if why:
        pytest.skip(why)
    # under /tmp, open to the postgres user the cluster runs as
    base = Path(tempfile.mkdtemp(prefix="saga-hosts-"))
    base.chmod(0o755)
    with Network(HOSTS) as net, \
            PostgresCluster(base / "postgres", host=net["db"].address,
                            launcher=net["db"].command([])) as cluster:
        env = {"REDIS_URL": "", "SMTP_HOST": "",  # embedded: the broker on its host
               "ORCHESTRATOR_RELAY_INTERVAL_S": "0.5", "ORCHESTRATOR_RELAY_GRACE_S": "1",
               "ORCHESTRATOR_STEP_DEADLINE_S": "30",
               "PAYMENT_RETRY_BACKOFF_S": "0.05", "GATEWAY_TIMEOUT_MS": "20",
               "NOTIFY_RETRY_BACKOFF_S": "0.2",
               **{f"{name.upper()}_DATABASE_URL": cluster.create_database(name)
                  for name in ("orchestrator", "payment", "inventory", "notify")}}
        with Stack(base / "var", env=env, api_port=8000, network=net) as stack:
            stack.wait_ready(timeout=120)
            assert stack.redis is not None and stack.smtp is not None
            yield Topology(net, stack.redis, stack, stack.smtp, cluster)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def api(topology: Topology) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=topology.stack.api_url, timeout=30) as client:
        yield client


def all_end_well(api: httpx.Client, mail: MailDropServer, placed: list[str]) -> None:
    for order_id in placed:
        order = wait_terminal(api, order_id, timeout=120)
        assert (order["status"], order["needs_attention"]) == ("confirmed", False), order
        wait_for(lambda o=order_id: mails_for(mail.maildir, o), 120, what="its e-mail")
    time.sleep(2)  # a second e-mail would come now
    assert [len(mails_for(mail.maildir, o)) for o in placed] == [1] * len(placed)


@pytest.mark.parametrize("worker", ["payment", "inventory"])
@pytest.mark.parametrize("direction", ["both", "out", "in"])
def test_a_worker_host_cut_off_from_the_broker_catches_up_when_the_network_heals(
        topology: Topology, api: httpx.Client, worker: str, direction: str) -> None:
    cut = topology.net[worker]
    cut.partition(topology.net["broker"], direction)
    try:
        placed = place_promptly(api, 4, f"{worker}-{direction}-")
        time.sleep(FAULT_S)
    finally:
        cut.heal()
    all_end_well(api, topology.mail, placed)


@contextmanager
def on_the_workers_links(topology: Topology, fault: Callable[[Host], object]) -> Iterator[None]:
    """`fault` done on each service's host, undone (whatever happens) after the block."""
    workers = [topology.net[name] for name in ("payment", "inventory", "notify")]
    try:
        for host in workers:
            fault(host)
        yield
    finally:
        for host in workers:
            host.heal()


def test_a_worker_host_cut_off_from_its_database_catches_up_when_the_network_heals(
        topology: Topology, api: httpx.Client) -> None:
    # statements in flight when the packets stop fail at tcp_user_timeout (runtime.db) and the
    # step waits the outage out: no order fails over it
    cut = topology.net["payment"]
    rules = cut.partition(topology.net["db"], "both")
    try:
        placed = place_promptly(api, 4, "db-cut-")
        time.sleep(FAULT_S)
    finally:
        cut.heal(rules)
    all_end_well(api, topology.mail, placed)


def test_postgresql_restarted_and_stopped_mid_run_loses_nothing(
        topology: Topology, api: httpx.Client) -> None:
    placed = place_promptly(api, 4, "pg-restart-")
    topology.postgres.restart("fast")  # every session cut
    placed += place_promptly_or_503(api, 4, "pg-after-restart-")
    topology.postgres.stop("fast")
    try:
        time.sleep(3)  # the API answers 503 meanwhile; steps in flight wait
        assert api.post("/orders", json={"customer_email": "x@example.com", "items": [
            {"sku": "BOOK-1", "quantity": 1}], "payment_token": "tok_visa"}).status_code == 503
    finally:
        topology.postgres.start()
    all_end_well(api, topology.mail, placed)


def place_promptly_or_503(api: httpx.Client, count: int, tag: str) -> list[str]:
    """Right after a restart a POST may meet a connection the restart cut: a 503 the client
    repeats (the Idempotency-Key keeps it one order)."""
    placed = []
    for index in range(count):
        key = {"Idempotency-Key": f"{tag}{index}"}
        body = {"customer_email": f"{tag}{index}@example.com", "payment_token": "tok_visa",
                "items": [{"sku": "BOOK-1", "quantity": 1}]}
        response = wait_for(lambda b=body, k=key: (r := api.post("/orders", json=b, headers=k))
                            .status_code == 202 and r, timeout=30, what="the POST to be taken")
        placed.append(str(response.json()["id"]))
    return placed


def test_a_lossy_link_to_the_broker_slows_orders_but_loses_none(
        topology: Topology, api: httpx.Client) -> None:
    with on_the_workers_links(topology, lambda host: host.lossy(topology.net["broker"], 0.1)):
        all_end_well(api, topology.mail, place_promptly(api, 6, "lossy-"))


def test_orders_placed_while_the_broker_host_is_frozen_complete_when_it_resumes(
        topology: Topology, api: httpx.Client) -> None:
    namespace = topology.net["broker"].namespace
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", namespace],
                                           capture_output=True, text=True).stdout.split()]
    assert pids, "nothing runs on the broker host"
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        placed = place_promptly(api, 4, "frozen-")
        health = api.get("/healthz")
        assert (health.status_code, health.json()["database"]) == (503, "ok")
        time.sleep(FAULT_S)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    all_end_well(api, topology.mail, placed)


def test_added_latency_on_the_links_slows_orders_but_loses_none(
        topology: Topology, api: httpx.Client) -> None:
    why = hosts.latency_available()
    if why:
        pytest.skip(why)
    with on_the_workers_links(topology, lambda host: host.delay(150, jitter_ms=50)):
        all_end_well(api, topology.mail, place_promptly(api, 4, "latency-"))
