"""Our kombu Redis transport against a real Redis: what a lost connection does to a channel."""
import pytest
import redis
from kombu import Connection

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
