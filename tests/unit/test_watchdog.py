"""When a worker counts as stalled: messages wait on its queue, for long, and it takes none."""
from runtime.watchdog import Stall


def test_a_message_that_just_arrived_on_an_idle_worker_is_not_a_stall() -> None:
    stall = Stall(now=0.0)  # idle since 0
    assert stall.look(depth=0, holding=0, now=3600.0) == 0.0
    assert stall.look(depth=1, holding=0, now=3605.0) == 0.0  # it waits from here
    assert stall.look(depth=1, holding=0, now=3665.0) == 60.0


def test_a_busy_worker_or_an_empty_queue_or_an_away_broker_is_no_stall() -> None:
    stall = Stall(now=0.0)
    assert stall.look(depth=5, holding=8, now=100.0) == 0.0  # every slot busy
    assert stall.look(depth=None, holding=0, now=200.0) == 0.0  # the broker away
    assert stall.look(depth=5, holding=0, now=300.0) == 0.0
    stall.last_received = 330.0  # it took one: the wait starts again from there
    assert stall.look(depth=5, holding=0, now=340.0) == 10.0
    assert stall.look(depth=0, holding=0, now=350.0) == 0.0
    assert stall.look(depth=2, holding=0, now=360.0) == 0.0
