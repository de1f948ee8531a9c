"""What guards one delivery of a step, kept in Redis: its delivery count and its per-(order, step)
lock, taken together in one round trip at the start and dropped together at the end, by a
thread that pipelines the ends of every delivery that finished meanwhile (Releaser).

- Redis keeps no delivery count: a message that kills its worker every time would come back
  forever. Each delivery counts itself on start and forgets itself on finish, so the count is
  the number of deliveries of this very message (task id and retry number) that died mid-run.
- Two deliveries of one step at once (a duplicate, a redelivery racing the original) would both
  pass the inbox check and both send the e-mail. The lock makes the second wait, then find the
  first one's outcome in the inbox. The inbox stays what makes a step correct; the lock only
  stops concurrent runs, and its lease frees it if the holder dies.

Both are hints, never gates: with Redis unreachable a step runs unguarded (and says so)."""
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from runtime.batches import next_batch

if TYPE_CHECKING:
    from runtime.broker import Broker

log = logging.getLogger("saga.step")

MAX_DELIVERIES = 5  # past this many deliveries that died mid-run, a message is poison
LOCK_LEASE_S = 30  # longer than any one run of a step (SMTP times out at 10 s)
LOCK_WAIT_S = 10
COUNT_TTL_S = 86400

# KEYS: the delivery count, then the lock (absent when the order is unknown).
# ARGV: lock token, lease in ms, count TTL in s, MAX_DELIVERIES. Returns {count, locked}.
_BEGIN = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #KEYS < 2 or n > tonumber(ARGV[4]) then return {n, 0} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {n, 1} end
return {n, 0}
"""
# Forget the delivery; release the lock if it is still ours. Returns 1 if a lock was released.
_END = """
redis.call('DEL', KEYS[1])
if #KEYS > 1 and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


class Busy(Exception):
    """Another delivery of this step for this order is running: come back later."""


@dataclass
class Delivery:
    deliveries: int = 1  # of this message, this one included
    locked: bool = False


class Guard(Protocol):
    def hold(self, delivery: str, order_id: str | None,
             step: str) -> AbstractContextManager[Delivery]: ...


class Unguarded:
    """For brokers other than Redis: their own delivery count stands in (none is kept here)."""

    @contextmanager
    def hold(self, delivery: str, order_id: str | None, step: str) -> Iterator[Delivery]:
        yield Delivery()


def broker_client(broker: "Broker") -> redis.Redis:
    """A client of the broker's Redis for the guard and the replies' stream, waiting out a Redis
    restart or a Sentinel failover (~15 s) instead of failing the step. Building one connects
    to nothing."""
    return broker.redis(
        socket_timeout=5, retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=12),
        retry_on_error=[RedisConnectionError, RedisTimeoutError], decode_responses=True)


class RedisGuard:
    """The guard kept in the broker's Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.begin = self.client.register_script(_BEGIN)
        self.releases = Releaser(client)

    @contextmanager
    def hold(self, delivery: str, order_id: str | None, step: str) -> Iterator[Delivery]:
        """Counts this delivery (`delivery`: the message's task id and retry number) and holds
        the step's lock for the block; raises Busy if another delivery held the lock for
        LOCK_WAIT_S. A poison delivery (count past MAX_DELIVERIES) gets no lock: the caller
        dead-letters it."""
        keys = [delivery_key(delivery)] + ([lock_key(order_id, step)] if order_id else [])
        token = uuid.uuid4().hex
        try:
            count, locked = self.begin(keys, [token, LOCK_LEASE_S * 1000, COUNT_TTL_S,
                                              MAX_DELIVERIES])
            held = Delivery(int(count), bool(locked))
        except redis.RedisError:
            log.warning("unguarded (redis unreachable) order_id=%s step=%s", order_id, step)
            yield Delivery()
            return
        try:
            if order_id and not held.locked and held.deliveries <= MAX_DELIVERIES:
                waited = self._wait_for_lock(keys[1], token)
                held.locked = waited is True
                if waited is False:
                    raise Busy(f"another delivery of {step} for {order_id} is still running")
            yield held
        finally:
            self.releases.put(Release(keys, token, held.locked, order_id, step))

    def _wait_for_lock(self, key: str, token: str) -> bool | None:
        """True once the lock is ours, False if it stayed taken, None if Redis went away."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                if self.client.set(key, token, nx=True, px=LOCK_LEASE_S * 1000):
                    return True
            except redis.RedisError:
                # the lock only suppresses concurrent runs; the inbox keeps a repeat harmless
                log.warning("no lock (redis unreachable) %s", key)
                return None
        return False


def delivery_key(delivery: str) -> str:
    return f"saga:deliveries:{delivery}"


def lock_key(order_id: str, step: str) -> str:
    return f"saga:running:{order_id}:{step}"


@dataclass(frozen=True)
class Release:
    keys: list[str]
    token: str
    locked: bool
    order_id: str | None
    step: str


class Releaser:
    """Ends deliveries (forgets their count, releases their lock) from a thread of its own, all
    that are waiting in one pipelined round trip: a step's reply and the chain's next step go out
    without waiting on Redis for it. Nothing is lost by the wait of a few milliseconds: the lock
    only suppresses concurrent runs, and a retry comes back after its countdown. Nothing by a
    process that dies with releases waiting either: the lease and the count expire on their
    own, as they do when a step dies mid-run. The thread starts on first use (after a prefork
    pool has forked)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.end = client.register_script(_END)
        self.waiting: queue.SimpleQueue[Release] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, release: Release) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="guard-releaser",
                                               daemon=True)
                self.thread.start()
        self.waiting.put(release)

    def _run(self) -> None:
        while True:
            self.end_all(next_batch(self.waiting))

    def end_all(self, batch: list[Release]) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for release in batch:
                    self.end(release.keys, [release.token], client=pipe)
                released = pipe.execute()
        except redis.RedisError:  # the counts and the leases expire on their own
            log.warning("could not release the guard of %d deliveries", len(batch))
            return
        for release, was_released in zip(batch, released, strict=True):
            if release.locked and not was_released:  # the inbox already holds what we did
                log.warning("lock lease expired order_id=%s step=%s", release.order_id,
                            release.step)
