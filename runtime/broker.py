"""The broker every process shares, chosen by BROKER_URL (REDIS_URL before it): one Redis
(`redis://`, `rediss://`), Redis behind Sentinel (`sentinel://h1:26379;sentinel://h2:26379` with
BROKER_SENTINEL_MASTER), or RabbitMQ (`amqp://`). What differs between them is kept here: how to
reach the broker's Redis (the guard and the replies' stream live there), how Celery's transport
is told, and how deep a queue is."""
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

log = logging.getLogger("saga.broker")

Kind = Literal["redis", "sentinel", "amqp", "memory"]
SENTINEL_PORT = 26379
LOCK_WAIT_S = 3.0  # AmqpDepths: how long a caller waits for another's look


@dataclass(frozen=True)
class Broker:
    url: str
    sentinel_master: str | None = None

    @classmethod
    def of(cls, env: Mapping[str, str]) -> "Broker":
        """The broker named by a process's environment (for tools that start processes: the
        same variables, read the same way as ProcessSettings reads them)."""
        return cls(env.get("BROKER_URL") or env.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
                   env.get("BROKER_SENTINEL_MASTER") or None)

    def __post_init__(self) -> None:
        if self.kind == "sentinel" and not self.sentinel_master:
            raise ValueError("a sentinel:// BROKER_URL needs BROKER_SENTINEL_MASTER (the name "
                             "the sentinels monitor the master by)")

    @property
    def kind(self) -> Kind:
        scheme = urlsplit(self.url).scheme
        if scheme in ("redis", "rediss"):
            return "redis"
        if scheme == "sentinel":
            return "sentinel"
        if scheme in ("amqp", "amqps", "pyamqp"):
            return "amqp"
        if scheme == "memory":
            return "memory"  # kombu's in-process broker, for a unit test
        raise ValueError(f"BROKER_URL {self.url!r}: the broker must be redis://, rediss://, "
                         "sentinel:// or amqp://")

    @property
    def on_redis(self) -> bool:
        """Whether the broker is a Redis (alone or behind Sentinel): then the guard and the
        replies' stream are kept in it."""
        return self.kind in ("redis", "sentinel")

    def redis(self, **options: Any) -> redis.Redis:
        """A client of the broker's Redis (of the current master, behind Sentinel). Building
        one connects to nothing."""
        if self.kind == "redis":
            return redis.Redis.from_url(self.url, **options)
        if self.kind != "sentinel":
            raise ValueError(f"{self.kind} is not a Redis broker")
        hosts, db, password = _sentinels(self.url)
        # the sentinels are asked with the same bounds as the master is
        bounds = {k: v for k, v in options.items()
                  if k in ("socket_timeout", "socket_connect_timeout")}
        sentinel = Sentinel(hosts, sentinel_kwargs=bounds, **bounds)  # type: ignore[no-untyped-call]
        master = sentinel.master_for(  # type: ignore[no-untyped-call]
            cast(str, self.sentinel_master), db=db, password=password, **options)
        return cast(redis.Redis, master)

    def transport_options(self) -> dict[str, Any]:
        return {"master_name": self.sentinel_master} if self.kind == "sentinel" else {}

    def depths(self) -> "QueueDepths":
        """How deep the queues are, for the processes that watch them (the API's load shedding
        and metrics, a worker's watchdog)."""
        if self.on_redis:
            # one try, so that a health check answers within a second or two
            return RedisDepths(self.redis(socket_timeout=1, socket_connect_timeout=1,
                                          retry=Retry(NoBackoff(), 0)))
        return AmqpDepths(self.url)


def _sentinels(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """kombu's form, `sentinel://[:password@]host:port[/db];sentinel://host:port;...`."""
    hosts, db, password = [], 0, None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        hosts.append((parts.hostname or "127.0.0.1", parts.port or SENTINEL_PORT))
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
        if parts.password:
            password = unquote(parts.password)
    return hosts, db, password


class QueueDepths:
    """Messages waiting on a queue; None while the broker cannot say."""

    def ping(self) -> None:
        """Raises while the broker cannot be reached."""
        raise NotImplementedError

    def depth(self, queue: str) -> int | None:
        return self.depths([queue]).get(queue)

    def depths(self, queues: Iterable[str], stream: str | None = None) -> dict[str, int]:
        """Every queue's depth (and the stream's length on Redis), or {} while the broker is
        away: no sample rather than a wrong one."""
        raise NotImplementedError


class RedisDepths(QueueDepths):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def ping(self) -> None:
        self.client.ping()

    def depths(self, queues: Iterable[str], stream: str | None = None) -> dict[str, int]:
        names = list(queues)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for queue in names:
                    pipe.llen(queue)
                if stream is not None:
                    pipe.xlen(stream)
                    names.append(stream)
                return dict(zip(names, pipe.execute(), strict=True))
        except redis.RedisError:
            return {}


class AmqpDepths(QueueDepths):
    """RabbitMQ tells a queue's ready messages in reply to a passive declare. One connection,
    opened on first use and again after it failed, shared by the callers' threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.connection: Any = None

    def ping(self) -> None:
        if not self.lock.acquire(timeout=LOCK_WAIT_S):
            raise TimeoutError("the broker's last answer is still awaited")
        try:
            self._connected().channel().close()
        except Exception:
            self._drop()
            raise
        finally:
            self.lock.release()

    def depths(self, queues: Iterable[str], stream: str | None = None) -> dict[str, int]:
        # a caller never waits behind another's look for long: no sample rather than a wait
        if not self.lock.acquire(timeout=LOCK_WAIT_S):
            return {}
        try:
            self._connected()
            return {queue: self._depth(queue) for queue in queues}
        except Exception as exc:  # the broker away, or the connection lost
            log.debug("queue depths unavailable: %s: %s", type(exc).__name__, exc)
            self._drop()
            return {}
        finally:
            self.lock.release()

    def _connected(self) -> Any:
        from kombu import Connection
        if self.connection is None:
            self.connection = Connection(self.url, connect_timeout=1, transport_options={
                "read_timeout": 2, "write_timeout": 2})
            self.connection.connect()
        return self.connection

    def _drop(self) -> None:
        if self.connection is not None:
            self.connection.collect()
        self.connection = None

    def _depth(self, queue: str) -> int:
        channel = self.connection.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).message_count)
        except self.connection.channel_errors:
            return 0  # not declared yet (a 404, which closes the channel): nothing waits on it
        finally:
            try:
                channel.close()
            except Exception:
                pass
