"""How each fault is done to the running system, from outside, as an operator's bad day would."""
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import psutil
import redis
from kombu import Connection
from kombu import Queue as KombuQueue
from kombu.exceptions import DecodeError
from kombu.exceptions import OperationalError as KombuOperationalError

from chaos.plan import QUEUES, SERVICES, Fault
from contracts.names import Queue
from devstack.hosts import Network
from devstack.postgres import PostgresCluster
from devstack.rabbitmq import RabbitNode
from devstack.redis_server import EmbeddedRedis
from devstack.sentinel import SentinelGroup
from devstack.stack import Stack
from runtime.broker import Broker
from runtime.rabbitmq import TASKS
from runtime.reply_stream import STREAM as REPLIES
from runtime.transport import decode_envelope

T = TypeVar("T")


class Injector:
    def __init__(self, stack: Stack, say: Callable[[str], None],
                 postgres: PostgresCluster | None = None,
                 sentinels: SentinelGroup | None = None,
                 rabbit: RabbitNode | None = None) -> None:
        self.stack, self.say, self.postgres = stack, say, postgres
        self.sentinels, self.rabbit = sentinels, rabbit
        self.junk_sent = 0
        self.junk_wiped = 0  # junk still queued when a redis_wipe lost it with everything else
        self.duplicates_sent = 0

    def apply(self, fault: Fault) -> None:
        getattr(self, fault.kind)(fault)

    def kill_main(self, fault: Fault) -> None:
        pid = self.stack.supervisor.pid(fault.target)
        if pid is None:
            self.say(f"{fault.target} has no running process to kill")
            return
        os.kill(pid, signal.SIGKILL)
        self.say(f"kill -9 {fault.target} main process {pid}")

    def kill_child(self, fault: Fault) -> None:
        pid = self.stack.supervisor.pid(fault.target)
        children = psutil.Process(pid).children() if pid else []
        if not children:
            self.say(f"{fault.target} has no pool child to kill")
            return
        victim = children[0].pid
        os.kill(victim, signal.SIGKILL)
        self.say(f"kill -9 {fault.target} pool child {victim}")

    def redis_restart(self, _: Fault) -> None:
        broker = self._broker()
        broker.stop()
        broker.start()
        self.say("redis restarted (append-only file kept: nothing lost)")

    def redis_wipe(self, _: Fault) -> None:
        broker = self._broker()
        client = self._client()
        self.junk_wiped += sum(1 for queue in QUEUES
                               for raw in cast(list[bytes], client.lrange(queue, 0, -1))
                               if not _is_message(raw))
        broker.stop()
        for leftover in [*broker.data_dir.glob("appendonly*"), *broker.data_dir.glob("*.rdb")]:
            if leftover.is_dir():
                for part in leftover.iterdir():
                    part.unlink()
                leftover.rmdir()
            else:
                leftover.unlink()
        broker.start()
        self.say("redis restarted WITHOUT persistence: every queued and unacked message is gone")

    def redis_pause(self, fault: Fault) -> None:
        broker = self._broker()
        broker.pause()
        self.say(f"redis frozen (SIGSTOP) for {fault.duration_s:.0f}s: connections hang")
        self._later(fault.duration_s, broker.resume, "redis resumed (SIGCONT)")

    def rabbitmq_restart(self, _: Fault) -> None:
        assert self.rabbit is not None, "a rabbitmq_restart needs --broker rabbitmq"
        node, started = self.rabbit, time.monotonic()
        self.say("rabbitmq node stopping, to be started again")

        def restart() -> None:  # a node takes ~10 s to stop and start: the schedule goes on
            node.restart()
            self.say(f"rabbitmq node back after {time.monotonic() - started:.0f}s (its quorum "
                     "queues kept on disk)")
        threading.Thread(target=restart, daemon=True).start()

    def failover(self, fault: Fault) -> None:
        assert self.sentinels is not None, "a failover needs --broker sentinel"
        group = self.sentinels
        old = group.current_master()
        victim = group.kill_master()
        self.say(f"redis master {old} killed (-9): the sentinels elect its replica")

        def promoted_then_back() -> None:
            assert old is not None
            try:
                new = group.wait_promoted(old)
                self.say(f"the sentinels promoted {new}")
            except TimeoutError as exc:
                self.say(f"no failover: {exc}")
            time.sleep(fault.duration_s)
            victim.start()
            self.say(f"the old master {old} is back, to be made a replica by the sentinels")
        threading.Thread(target=promoted_then_back, daemon=True).start()

    def pg_restart(self, _: Fault) -> None:
        self._postgres().restart("fast")
        self.say("postgresql restarted (fast: every session cut)")

    def pg_stop(self, fault: Fault) -> None:
        postgres = self._postgres()
        postgres.stop("fast")
        self.say(f"postgresql stopped for {fault.duration_s:.0f}s")
        self._later(fault.duration_s, postgres.start, "postgresql started again")

    def partition(self, fault: Fault) -> None:
        net = self._network()
        host = net[fault.target]
        rules = host.partition(net["broker"], fault.how)
        self.say(f"{fault.target}'s host cut off from the broker's ({fault.how}) "
                 f"for {fault.duration_s:.0f}s")
        self._later(fault.duration_s, lambda: host.heal(rules),
                    f"{fault.target}'s host reaches the broker again")

    def lossy(self, fault: Fault) -> None:
        net = self._network()
        added = {name: net[name].lossy(net["broker"], 0.1) for name in SERVICES}

        def heal() -> None:
            for name, rules in added.items():
                net[name].heal(rules)
        self.say(f"the workers' links drop 10% of packets for {fault.duration_s:.0f}s")
        self._later(fault.duration_s, heal, "the workers' links lose nothing again")

    def latency(self, fault: Fault) -> None:
        net = self._network()
        for name in SERVICES:
            net[name].delay(100, jitter_ms=30)
        def undelay() -> None:
            for name in SERVICES:
                net[name].undelay()
        self.say(f"the workers' links delay packets 100 ms for {fault.duration_s:.0f}s")
        self._later(fault.duration_s, undelay, "the workers' links are fast again")

    def duplicate(self, fault: Fault) -> None:
        """Queued messages pushed again, and in-flight (unacked) ones too: redelivery as it is."""
        if self.rabbit is not None:
            url = self.rabbit.url
            copied = _when_up(lambda: amqp_duplicate(url, fault.target))
            self.duplicates_sent += copied
            self.say(f"duplicated {copied} message(s) on queue {fault.target}")
            return
        client = self._client()
        # real messages only: a copy of the junk pushed a moment ago would be junk we did not count
        queued = cast(list[bytes], client.lrange(fault.target, 0, 4))  # a sync client's reply
        copies = [raw for raw in queued if _is_message(raw)]
        for raw in cast(list[bytes], client.hvals("unacked"))[:5]:
            payload, _exchange, routing_key = json.loads(raw)
            if routing_key == fault.target:
                copies.append(json.dumps(payload).encode())
        for raw in copies:
            client.lpush(fault.target, raw)
        replies = 0
        if fault.target == Queue.SAGA:
            # the steps' replies travel on the replies' stream: the last few again, as a step
            # that sent its reply twice would
            for _, fields in cast(list[Any], client.xrevrange(REPLIES, count=5)):
                client.xadd(REPLIES, fields)
                replies += 1
        self.duplicates_sent += len(copies) + replies
        self.say(f"duplicated {len(copies)} message(s) on queue {fault.target}"
                 + (f" and {replies} on the replies' stream" if fault.target == Queue.SAGA
                    else ""))

    def junk(self, fault: Fault) -> None:
        if self.rabbit is not None:
            url = self.rabbit.url
            _when_up(lambda: amqp_publish(url, fault.target, JUNK))
        else:
            client = self._client()
            for junk in JUNK:
                client.lpush(fault.target, junk)
        self.junk_sent += len(JUNK)
        self.say(f"pushed 2 junk messages onto queue {fault.target}")

    def smtp_outage(self, fault: Fault) -> None:
        smtp = self.stack.smtp
        assert smtp is not None
        smtp.stop()
        self.say(f"SMTP refusing connections for {fault.duration_s:.0f}s")
        self._later(fault.duration_s, smtp.start, "SMTP back")

    def _later(self, after_s: float, undo: Callable[[], object], said: str) -> None:
        def back() -> None:
            time.sleep(after_s)
            undo()
            self.say(said)
        threading.Thread(target=back, daemon=True).start()

    def _network(self) -> Network:
        assert self.stack.network is not None, "a network fault needs the run on hosts"
        return self.stack.network

    def _postgres(self) -> PostgresCluster:
        assert self.postgres is not None, "a pg_* fault needs --database postgres"
        return self.postgres

    def _broker(self) -> EmbeddedRedis:
        assert self.stack.redis is not None, "chaos runs on its own embedded redis"
        return self.stack.redis

    def _client(self) -> redis.Redis:
        for _ in range(20):
            try:
                client = Broker.of(self.stack.env).redis(socket_timeout=5)
                client.ping()
                return client
            except redis.RedisError:  # refused, or frozen by a redis_pause
                time.sleep(0.5)
        raise RuntimeError("redis did not come back")


JUNK = (b"\x00\xffnot json at all", b'{"json": "but not a message"}')


def _when_up(do: Callable[[], T], for_s: float = 90.0) -> T:
    """`do()`, again until the broker is back from a restart."""
    deadline = time.monotonic() + for_s
    while True:
        try:
            return do()
        except (OSError, KombuOperationalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def amqp_publish(url: str, queue: str, bodies: Sequence[bytes]) -> None:
    """Raw bodies onto a queue of ours, claiming to be JSON, as a broken producer would; each
    confirmed by RabbitMQ (a publish it refused raises, to be sent again), so that the junk
    counted as sent is junk the broker took."""
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()
        for body in bodies:
            producer.publish(body, exchange=TASKS, routing_key=queue, retry=True,
                             content_type="application/json", content_encoding="utf-8")


# every message published to our queues, the last TAP_KEEP of them, for the duplicate fault:
# on RabbitMQ what a worker holds unacked cannot be read, and the queues are mostly empty
# durable: it outlives a restart of the node
TAP = KombuQueue("chaos.tap", TASKS, routing_key="#", durable=True, auto_delete=False,
                 queue_arguments={"x-max-length": 200})


def amqp_tap(url: str) -> None:
    """Start keeping copies of what is published to our queues (amqp_duplicate sends them)."""
    with Connection(url) as connection:
        TAP(connection.default_channel).declare()


def amqp_duplicate(url: str, queue: str, most: int = 5) -> int:
    """The last `most` messages sent to `queue` (by the tap), published again: a redelivery of
    work that may well have been done already. Returns how many were sent."""
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        tap = TAP(connection.default_channel)
        tap.declare()
        seen = [m for m in iter(lambda: tap.get(no_ack=True), None)
                if str(m.delivery_info.get("routing_key", "")).rsplit(".", 1)[-1] == queue
                and m.headers.get("task")]  # tasks of ours, not junk
        producer = connection.Producer()
        for message in seen[-most:]:
            producer.publish(message.body, exchange=TASKS, routing_key=queue,
                             content_type=message.content_type,
                             content_encoding=message.content_encoding,
                             headers={k: v for k, v in message.headers.items()
                                      if not k.startswith("x-")})
        return len(seen[-most:])


def _is_message(raw: bytes) -> bool:
    try:
        decode_envelope(raw)
    except DecodeError:
        return False
    return True


def maildir_of(stack: Stack) -> Path:
    assert stack.maildir is not None
    return stack.maildir
