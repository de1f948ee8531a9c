"""The step guard on a real Redis: what a delivery holds is let go soon after it ends, by the
releaser's thread, and a concurrent delivery of the same step waits for it."""
import threading

import redis

from runtime.broker import Broker
from runtime.guard import RedisGuard, broker_client, delivery_key, lock_key
from tests.support.waiting import wait_for


def test_a_finished_delivery_lets_go_of_its_count_and_its_lock(redis_db):
    guard, client = RedisGuard(broker_client(Broker(redis_db))), redis.Redis.from_url(redis_db)
    keys = [delivery_key("t-1:0"), lock_key("o-1", "payment.authorize")]
    with guard.hold("t-1:0", "o-1", "payment.authorize") as held:
        assert (held.deliveries, held.locked) == (1, True)
        assert client.exists(*keys) == 2
    wait_for(lambda: client.exists(*keys) == 0, timeout=5, what="the guard released")


def test_a_second_delivery_of_the_step_waits_for_the_first_to_end(redis_db):
    guard = RedisGuard(broker_client(Broker(redis_db)))
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with guard.hold("t-1:0", "o-1", "inventory.reserve"):
            inside.set()
            threading.Event().wait(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with guard.hold("t-1b:0", "o-1", "inventory.reserve") as held:
        order.append("second in")
        assert held.locked
    thread.join()
    assert order == ["first done", "second in"]
