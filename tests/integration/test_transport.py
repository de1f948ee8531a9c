"""Our kombu Redis transport against a real Redis: what a lost connection does to a channel."""
import time

import pytest
import redis
from kombu import Connection

from devstack.redis_server import EmbeddedRedis
from runtime import transport
from runtime.deadletters import LoggedOnly
from runtime.transport import transport_for

QUEUE = "transport-test"


def test_closing_a_lost_connection_with_unacked_messages_is_a_connection_error(redis_db):
    url = redis_db
    # What Celery does when Redis goes away mid-run: it closes the connection, the transport
    # drops its client, and the channel restores what it holds unacked. That used to raise an
    # AttributeError, which ended the worker ("Unrecoverable error").
    conn = Connection(url, transport=transport_for(LoggedOnly()))
    channel = conn.default_channel
    queue = conn.SimpleQueue(QUEUE).queue
    conn.Producer(channel).publish({"n": 1}, routing_key=QUEUE, declare=[queue])
    message = channel.basic_get(QUEUE, no_ack=False)
    assert message is not None  # taken, not acked: held by the channel and in the unacked hash
    channel.connection.client = None  # the order kombu's Connection.close leaves things in
    with pytest.raises(conn.connection_errors):  # Celery ignores these while closing
        channel.close()
    # nothing lost: the message waits in the unacked hash until it is restored
    assert redis.Redis.from_url(url).hlen("unacked") == 1


class Store:
    """A dead-letter store whose database can be away."""

    def __init__(self) -> None:
        self.away, self.kept = True, []

    def store(self, task, order_id, payload, error):
        if self.away:
            raise ConnectionError("dead letters' database away")
        self.kept.append((task, payload))

    record = store


def test_junk_stays_on_its_queue_while_the_dead_letters_cannot_be_stored(redis_db,
                                                                         monkeypatch):
    monkeypatch.setattr(transport, "DEAD_LETTERS_PAUSE_S", 0.3)  # the store is tried again after
    store = Store()
    conn = Connection(redis_db, transport=transport_for(store))
    client = redis.Redis.from_url(redis_db)
    consumer = conn.Consumer(conn.SimpleQueue(QUEUE).queue, callbacks=[lambda *_: None])
    client.lpush(QUEUE, b"\x00not json")
    with consumer:
        drain(conn)
        assert client.lrange(QUEUE, 0, -1) == [b"\x00not json"]  # put back, not lost
        store.away = False
        time.sleep(0.4)
        drain(conn)
    assert store.kept == [(f"<junk on queue {QUEUE}>", "\x00not json")]
    assert client.llen(QUEUE) == 0
    conn.release()


def drain(conn):
    try:
        conn.drain_events(timeout=2)
    except TimeoutError:  # nothing (more) on the queue
        pass


def test_an_ack_that_times_out_on_a_hung_broker_does_not_stop_consuming(tmp_path):
    # With prefetch 1, stock kombu kept the slot of an ack that failed: the worker never asked
    # for a message again, long after the broker was back.
    with EmbeddedRedis(tmp_path / "redis") as broker:
        conn = Connection(broker.url, transport=transport_for(LoggedOnly()),
                          transport_options={"socket_timeout": 0.5})
        channel = conn.default_channel
        channel.basic_qos(0, 1, False)
        queue = conn.SimpleQueue(QUEUE).queue
        conn.Producer(channel).publish({"n": 1}, routing_key=QUEUE, declare=[queue])
        message = channel.basic_get(QUEUE, no_ack=False)
        assert message is not None and not channel.qos.can_consume()
        broker.pause()
        try:
            with pytest.raises(conn.connection_errors):
                channel.qos.ack(message.delivery_tag)
        finally:
            broker.resume()
        assert channel.qos.can_consume()  # free to take the next message...
        conn.Producer(channel).publish({"n": 2}, routing_key=QUEUE, declare=[queue])
        following = channel.basic_get(QUEUE, no_ack=False)
        assert following is not None and following.payload == {"n": 2}  # ... and takes it
        conn.release()
