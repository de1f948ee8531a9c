"""kombu's Redis transport, except that junk on a queue is dead-lettered instead of stopping the
worker (stock kombu decodes what BRPOP returns inside the event loop, and one non-JSON item
there ends the worker's main process: "Unrecoverable error"), and that a failed ack cannot stop
a worker consuming (QoS below). Pinned to kombu 5.7.

Each app gets a transport class of its own (`transport_for`), carrying the app's dead-letter
store: kombu builds transports from a class, not from an app."""
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import TYPE_CHECKING, Any

from celery.app.amqp import AMQP
from kombu import Connection
from kombu.exceptions import DecodeError
from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from runtime.deadletters import DeadLetterSink

ENVELOPE_KEYS = ("body", "properties")
log = logging.getLogger("saga.deadletters")

# once the dead-letter store failed, how long junk goes straight back on its queue
DEAD_LETTERS_PAUSE_S = 10.0


def decode_envelope(item: bytes | str) -> dict[str, Any]:
    try:
        envelope = loads(bytes_to_str(item))
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or any(k not in envelope for k in ENVELOPE_KEYS) \
            or not isinstance(envelope["properties"], dict) \
            or "delivery_tag" not in envelope["properties"]:
        raise DecodeError("JSON, but not a kombu message envelope")
    return envelope


class QoS(redis.QoS):
    """kombu's Redis QoS, except that an ack or reject that fails still frees its prefetch slot.
    Stock kombu frees it only after the Redis command succeeded: an ack that timed out on a hung
    broker (logged "Couldn't ack" and swallowed by kombu.message) kept the slot taken, and with
    prefetch 1 the worker never asked for a message again. The message itself stays in the
    unacked hash and comes back after the visibility timeout: our steps are idempotent."""

    def ack(self, delivery_tag: Any) -> None:
        try:
            self._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(self, delivery_tag)


class Channel(redis.Channel):
    QoS = QoS
    _shared_client: Any = None
    _dead_letters_back_at = 0.0

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        # Stock kombu builds a new redis.Redis for every publish and every ack, and building one
        # costs more than the command it sends. A client holds no connection of its own (each
        # command borrows one from the pool), so one per pool serves every thread.
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def _connparams(self, asynchronous: bool = False) -> Any:
        # With a threads pool, Redis going away closes a channel that another thread is about to
        # publish on; stock kombu then raises AttributeError, which no retry policy catches, and
        # Celery drops the message (Reject). A connection error is retried on a revived channel.
        # The same when the lost connection is being closed with messages still unacked: kombu
        # restores them through a new pool, its transport has already dropped its client, and the
        # AttributeError ended the worker ("Unrecoverable error"). As a connection error it is
        # ignored there; the messages stay in the unacked hash and come back on their own.
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("channel closed under us by a lost connection")
        return super()._connparams(asynchronous=asynchronous)

    def _brpop_read(self, **options: Any) -> bool:
        # the body of redis.Channel._brpop_read, with the decode guarded
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP",
                                                        **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            try:
                envelope = decode_envelope(item)
            except DecodeError as exc:
                self._dead_letter(dest, item, exc)
                return True
            self.connection._deliver(envelope, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()


    def _dead_letter(self, queue: str, item: bytes | str, exc: DecodeError) -> None:
        raw = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
        # This runs in the consumer's event loop: once the store has failed, junk is put back
        # at once for a while rather than blocking the loop on a database that is away.
        if time.monotonic() >= self._dead_letters_back_at:
            try:
                self.connection.dead_letters.store(f"<junk on queue {queue}>", None, raw,
                                                   str(exc))
                return
            except Exception as store_failed:
                self._dead_letters_back_at = time.monotonic() + DEAD_LETTERS_PAUSE_S
                log.warning("junk on queue %s kept on the queue: dead letters unavailable "
                            "(%s: %s)", queue, type(store_failed).__name__, store_failed)
        # BRPOP took it off the queue and it has no delivery tag to come back by: put it back,
        # behind what is queued, until the dead letters' database is back
        with self.conn_or_acquire() as client:
            client.lpush(queue, item)
        time.sleep(0.5)  # not a hot loop on junk alone


class SentinelChannel(Channel, redis.SentinelChannel):
    """The same, on the master the sentinels name (kombu's SentinelChannel finds it)."""


class Transport(redis.Transport):
    Channel = Channel
    dead_letters: "DeadLetterSink"


class SentinelTransport(redis.SentinelTransport):
    Channel = SentinelChannel
    dead_letters: "DeadLetterSink"


class KeptTransportConnection(Connection):
    """kombu's Connection, except that failing over to another host of the broker URL (a
    `;`-separated list: Sentinel's URL is one) keeps the transport class it was given. Stock
    kombu re-reads the transport from the next URL's scheme, so a worker that had failed over ran
    stock kombu's, and the first junk on its queue ended it ("Unrecoverable error")."""

    def switch(self, conn_str: str) -> None:
        given: Any = self.transport_cls  # a class of ours, or a name
        userid, password = self.userid, self.password
        super().switch(conn_str)
        if not isinstance(given, str):
            self.transport_cls = given
        # the credentials are on the first URL only, as kombu reads a Sentinel URL
        self.userid, self.password = self.userid or userid, self.password or password


class SagaAMQP(AMQP):
    Connection = KeptTransportConnection


def transport_for(dead_letters: "DeadLetterSink",
                  sentinel: bool = False) -> type[redis.Transport]:
    """kombu's Redis transport (behind Sentinel: its Sentinel transport), dead-lettering junk
    into this store."""
    base = SentinelTransport if sentinel else Transport
    return type("DeadLetteringTransport", (base,), {"dead_letters": dead_letters})
