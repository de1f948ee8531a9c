"""`python -m chaos`: the whole system on its own Redis, orders pouring in, faults on a seeded
schedule, then the invariants checked from outside. Exits 1 if any is broken."""
import argparse
import contextlib
import json
import random
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from chaos import client, invariants, plan
from chaos.faults import Injector, amqp_tap, maildir_of
from contracts.names import Queue
from devstack import hosts
from devstack.net import free_port
from devstack.postgres import PostgresCluster
from devstack.rabbitmq import RabbitNode
from devstack.sentinel import SentinelGroup
from devstack.stack import Stack
from runtime.broker import Broker
from runtime.reply_stream import STREAM as REPLIES

HOSTS = ["broker", "db", "app", "payment", "inventory", "notify"]

# Short deadlines so recovery shows within a run; the code paths are production's.
SYSTEM_ENV = {
    "ORCHESTRATOR_STEP_DEADLINE_S": "6", "ORCHESTRATOR_SAGA_DEADLINE_S": "120",
    "ORCHESTRATOR_RELAY_INTERVAL_S": "1", "ORCHESTRATOR_RELAY_GRACE_S": "2",
    "PAYMENT_RETRY_BACKOFF_S": "0.1", "GATEWAY_TIMEOUT_MS": "20",
    "NOTIFY_RETRY_BACKOFF_S": "0.25",
    # a locked or away database is a 503 within the POST bound (chaos/client.py), not a wait
    "ORCHESTRATOR_DATABASE_TIMEOUT_S": "1",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--orders", type=int, default=500, help="orders to place (default: %(default)s)")
    p.add_argument("--window", type=float, default=60.0,
                   help="seconds over which orders arrive and faults strike (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="replay a schedule (default: random)")
    p.add_argument("--settle", type=float, default=180.0,
                   help="seconds allowed, after the last fault, for every order to end")
    p.add_argument("--var-dir", type=Path, default=Path("var/chaos"),
                   help="where this run's databases, mails and logs go (wiped first)")
    p.add_argument("--quick", action="store_true",
                   help="the short variant `make test` runs: 80 orders over 20 s")
    p.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                   help="every service on SQLite files, or on a PostgreSQL cluster of the run's "
                        "own (initdb/pg_ctl; enables the pg_* faults) (default: %(default)s)")
    p.add_argument("--broker", choices=("redis", "sentinel", "rabbitmq"), default="redis",
                   help="redis: one embedded redis-server; sentinel: a master, a replica and "
                        "three sentinels of the run's own (enables the failover fault); "
                        "rabbitmq: a RabbitMQ node of the run's own (rabbitmq-server, as root; "
                        "enables rabbitmq_restart) (default: %(default)s)")
    p.add_argument("--hosts", choices=("auto", "on", "off"), default="auto",
                   help="spread the system over hosts (network namespaces: the broker, the "
                        "database, the API with the saga worker, each service), which the "
                        "network faults need; auto: when this machine can (root, ip, iptables) "
                        "(default: %(default)s)")
    p.add_argument("--faults", default="all", type=_kinds, metavar="KIND,...",
                   help="which faults to inject, comma-separated (default: all that apply): "
                        + "; ".join(f"{k}: {v}" for k, v in plan.KINDS.items()))
    return p


def _kinds(value: str) -> set[str]:
    kinds = set(plan.KINDS) if value == "all" else {k.strip() for k in value.split(",") if k}
    unknown = kinds - set(plan.KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {sorted(unknown)}; "
                                         f"known: {', '.join(plan.KINDS)}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.orders, args.window = 80, 20.0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    say = _printer()
    chosen = args.faults != set(plan.KINDS)  # named on the command line, not "all"
    kinds = set(args.faults)

    def without(unavailable: set[str], why: str) -> None:
        nonlocal kinds
        if chosen and kinds & unavailable:
            parser().error(f"{', '.join(sorted(kinds & unavailable))}: {why}")
        if kinds & unavailable:
            say(f"not injecting {', '.join(sorted(kinds & unavailable))}: {why}")
        kinds -= unavailable
    if args.database != "postgres":
        without(plan.POSTGRES_ONLY, "needs --database postgres")
    without(set().union(*plan.BROKER_FAULTS.values()) - plan.BROKER_FAULTS[args.broker],
            f"not on --broker {args.broker}")
    hosts_why = "--hosts off" if args.hosts == "off" else hosts.available()
    if args.broker == "rabbitmq" and (rabbit_why := RabbitNode.unavailable()):
        parser().error(f"--broker rabbitmq: {rabbit_why}")
    if args.broker != "redis" and not hosts_why:
        hosts_why = f"--broker {args.broker} runs on this machine's loopback"
        if args.hosts == "on":
            parser().error(f"--hosts on: {hosts_why}")
    if hosts_why and args.hosts == "on":
        parser().error(f"--hosts on: {hosts_why}")
    if hosts_why:
        without(plan.HOSTS_ONLY, f"needs hosts ({hosts_why})")
    elif "latency" in kinds and (netem_why := hosts.latency_available()):
        without({"latency"}, netem_why)
    orders, faults = plan.orders(rng, args.orders), plan.faults(rng, args.window, kinds)
    say(f"seed {seed} (replay with --seed {seed} --faults {','.join(sorted(kinds))} "
        f"--database {args.database} --broker {args.broker} "
        f"--hosts {'off' if hosts_why else 'on'}); "
        f"{args.orders} orders over {args.window:.0f}s")
    say("fault schedule:\n    " + "\n    ".join(map(str, faults)))

    shutil.rmtree(args.var_dir, ignore_errors=True)
    log = (args.var_dir / "processes.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    # empty: our own embedded servers (a broker the run starts sets BROKER_URL below)
    env = {**SYSTEM_ENV, "REDIS_URL": "", "BROKER_URL": "", "BROKER_SENTINEL_MASTER": "",
           "SMTP_HOST": ""}
    process_env = {k: {"WORKER_POOL": "prefork", "WORKER_CONCURRENCY": "2"}
                   for k in plan.PREFORK_KINDS}
    with contextlib.ExitStack() as running:
        network = None if hosts_why else running.enter_context(hosts.Network(HOSTS))
        if network is not None:
            say("hosts: " + ", ".join(f"{h.name} {h.address}" for h in network.hosts.values()))
        sentinels = None
        if args.broker == "sentinel":
            sentinels = running.enter_context(SentinelGroup(args.var_dir / "sentinel"))
            env.update(BROKER_URL=sentinels.url, BROKER_SENTINEL_MASTER=sentinels.master_name)
            say(f"redis: behind sentinel, {sentinels.url} (master {sentinels.current_master()})")
        rabbit = None
        if args.broker == "rabbitmq":
            rabbit = running.enter_context(RabbitNode(args.var_dir / "rabbitmq"))
            env.update(BROKER_URL=rabbit.url)
            say(f"rabbitmq: a node of this run's own, {rabbit.name} on port {rabbit.port}")
        postgres = None
        if args.database == "postgres":
            postgres = running.enter_context(
                PostgresCluster(args.var_dir / "postgres") if network is None else
                PostgresCluster(args.var_dir / "postgres", host=network["db"].address,
                                launcher=network["db"].command([])))
            env.update({f"{name.upper()}_DATABASE_URL": postgres.create_database(name)
                        for name in ("orchestrator", "payment", "inventory", "notify")})
            say(f"postgresql: a cluster of this run's own on port {postgres.port}")
        out = running.enter_context(open(log, "w"))
        stack = running.enter_context(Stack(args.var_dir, env=env, api_port=free_port(),
                                            process_env=process_env, out=out,
                                            network=network))
        stack.wait_ready(90)
        say(f"system up at {stack.api_url} (process output in {log})")
        if rabbit is not None:
            amqp_tap(rabbit.url)
        injector = Injector(stack, say, postgres, sentinels, rabbit)
        started = time.monotonic()
        placing = client.Placing()
        loader = threading.Thread(target=client.place_all,
                                  args=(stack.api_url, orders, args.window, placing), daemon=True)
        loader.start()
        for fault in faults:
            time.sleep(max(0.0, started + fault.at_s - time.monotonic()))
            injector.apply(fault)
        last_fault = started + max(f.at_s + f.duration_s for f in faults)
        loader.join()
        placed = placing.order_ids
        say(f"all {len(placed)} orders placed; faults over; waiting for every order to end")
        final, recovered_s = _settle(stack, placed, last_fault, args.settle, say)
        diagnosis = _diagnose(stack, final, log)
        if rabbit is not None:  # what is still on RabbitMQ's queues, taken by no one or held
            say("rabbitmq queues (name, ready, unacked):\n    "
                + "\n    ".join(rabbit.queues()))
        report = invariants.check(final, stack.env, maildir_of(stack),
                                  (injector.junk_sent, injector.junk_wiped),
                                  sum(stack.supervisor.restarts.values()),
                                  dict(zip(placed, orders, strict=True)))
    report.check(f"POSTs answered after more than {client.POST_BOUND_S:.0f}s", placing.over_bound,
                 placing.over_bound == 0, "0")
    report.info("longest POST (s)", placing.slowest_s)
    report.info("POSTs repeated by the client (503, dropped)", placing.refused)
    report.info("duplicates injected", injector.duplicates_sent)
    for kind, count in sorted(Counter(f.kind for f in faults).items()):
        report.info(f"fault injected: {kind}", count)
    report.info("seconds to settle after last fault", recovered_s)
    print(report.table())
    (args.var_dir / "report.json").write_text(json.dumps(
        {"seed": seed, "rows": report.rows, "broken": report.broken}, indent=2, default=str))
    if report.broken:
        print("BROKEN:\n  " + "\n  ".join(report.broken))
        if diagnosis:
            print("where the stuck orders stopped:\n  " + "\n  ".join(diagnosis))
        print(f"replay: python -m chaos --seed {seed} --broker {args.broker}")
        return 1
    print(f"chaos: every invariant held (seed {seed})")
    return 0


def _settle(stack: Stack, placed: list[str], since: float, timeout: float,
            say: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], float | str]:
    """Wait until every order ended and its e-mail went out; return the orders as the API shows
    them and how long that took after the last fault."""
    maildir = maildir_of(stack)
    while True:
        orders = client.statuses(stack.api_url, placed)
        open_ = [o for o, d in orders.items() if d["status"] == "pending"]
        mailed = len(list(maildir.glob("*.eml")))
        waited = time.monotonic() - since
        if not open_ and mailed >= len(placed):
            return orders, round(waited, 1)
        if waited > timeout:
            return orders, f">{timeout:.0f}"
        say(f"  {len(open_)} order(s) still pending, {mailed}/{len(placed)} mails, {waited:.0f}s")
        time.sleep(3)


def _diagnose(stack: Stack, orders: dict[str, dict[str, Any]], log: Path) -> list[str]:
    """What a failed run's reader needs first (CI keeps only the output): where the stuck orders
    stopped, what the queues hold, and the process log's last warnings."""
    stuck = [d for d in orders.values() if d["status"] == "pending"]
    if not stuck:
        return []
    last = Counter(f"{d['steps'][-1]['name']} {d['steps'][-1]['status']}" if d["steps"]
                   else "(nothing recorded)" for d in stuck)
    lines = [f"{n} x last entry: {entry}" for entry, n in last.most_common(6)]
    broker = Broker.of(stack.env)
    depths = broker.depths().depths(Queue.ALL, stream=REPLIES if broker.on_redis else None)
    lines.append(f"queue depths {depths or 'unknown (the broker did not answer)'}")
    if broker.on_redis:
        try:
            lines.append(f"unacked {broker.redis(socket_timeout=2).hlen('unacked')}")
        except redis.RedisError as exc:
            lines.append(f"unacked unknown: {exc}")
    warnings = [line.rstrip()[:200] for line in log.read_text(errors="replace").splitlines()
                if " WARNING" in line or " ERROR" in line or "Traceback" in line]
    lines += ["log: " + line for line in warnings[-12:]]
    return lines


def _printer() -> Callable[[str], None]:
    lock, t0 = threading.Lock(), time.monotonic()

    def say(message: str) -> None:
        with lock:
            print(f"chaos {time.monotonic() - t0:6.1f}s | {message}", flush=True)
    return say


if __name__ == "__main__":
    sys.exit(main())
