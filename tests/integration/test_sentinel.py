"""Redis behind Sentinel, all real processes of the test's own: the broker's Redis found through
the sentinels, before and after the master is killed; a worker's connection that fails over
keeps our transport (junk on its queue is dead-lettered, not the end of the worker)."""
import time

import pytest
import redis

from devstack.sentinel import SentinelGroup
from runtime.broker import Broker
from runtime.celery_app import make_app
from runtime.deadletters import LoggedOnly
from runtime.transport import SentinelTransport


@pytest.fixture
def sentinels(tmp_path):
    with SentinelGroup(tmp_path) as group:
        yield group


def test_the_brokers_redis_is_the_master_the_sentinels_name_before_and_after_a_failover(
        sentinels):
    broker = Broker(sentinels.url, sentinels.master_name)
    client = broker.redis(socket_timeout=2, decode_responses=True)
    client.rpush("kept", "written before")
    sentinels.wait_until(lambda: sentinels.replica is not None and _has(sentinels), "replication")
    old = sentinels.current_master()
    sentinels.kill_master()
    new = sentinels.wait_promoted(old)
    assert new != old
    # the same client, with no new configuration, now talks to the promoted replica
    assert _until_answers(lambda: client.lrange("kept", 0, -1)) == ["written before"]
    client.rpush("kept", "written after")
    assert broker.depths().depth("kept") == 2


def test_a_connection_that_fails_over_to_another_sentinel_keeps_our_transport(sentinels):
    app = make_app("sentinel-test", Broker(sentinels.url, sentinels.master_name), LoggedOnly())
    with app.connection_for_write() as connection:
        assert issubclass(connection.transport_cls, SentinelTransport)
        connection.switch(sentinels.url.split(";")[1])  # what kombu does on a connection error
        # stock kombu would be back to its own transport here, its name read off the URL
        assert connection.transport_cls.dead_letters is app.dead_letters


def _has(group: SentinelGroup) -> bool:
    assert group.replica is not None
    return redis.Redis(host=group.replica.host, port=group.replica.port).llen("kept") == 1


def _until_answers(read, tries: int = 50):
    for _ in range(tries):
        try:
            return read()
        except redis.RedisError:
            time.sleep(0.2)
    return read()
