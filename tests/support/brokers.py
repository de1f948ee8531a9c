"""The brokers the suite runs on, each a real one of the tests' own: a Redis DB, a vhost on the
local RabbitMQ (created and deleted here; the tests skip, saying why, without one), or Redis
behind Sentinel (a master, a replica and three sentinels started here)."""
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack import rabbitmq
from devstack.sentinel import SentinelGroup
from tests.support.redis_dbs import RedisDbs

BROKERS = ("redis", "rabbitmq", "sentinel")

# A test of the whole system that runs once on Redis and once on RabbitMQ (tests/e2e/conftest.py's
# `system`). Behind Sentinel the system is on Redis again (the same transport and commands, on
# whichever server is master): it runs end to end in the Sentinel chaos run, its master killed
# mid-run (tests/e2e/test_chaos.py), and `broker_env("sentinel", ...)` gives any test one.
on_each_broker_kind = pytest.mark.parametrize("system", ["redis", "rabbitmq"], indirect=True)


@contextmanager
def broker_env(kind: str, redis_dbs: RedisDbs, tmp: Path) -> Iterator[dict[str, str]]:
    """The environment that points every process at a broker of this kind."""
    if kind == "redis":
        with redis_dbs.lend() as url:
            yield {"REDIS_URL": url}
    elif kind == "rabbitmq":
        why = rabbitmq.unavailable()
        if why:
            pytest.skip(f"RabbitMQ: {why}")
        with rabbitmq.Vhost() as vhost:
            yield {"BROKER_URL": vhost.url}
    elif kind == "sentinel":
        with SentinelGroup(tmp) as group:
            yield {"BROKER_URL": group.url, "BROKER_SENTINEL_MASTER": group.master_name}
    else:
        raise ValueError(f"no broker {kind!r}; known: {BROKERS}")
