"""A worker whose consumer stopped taking messages while its queue holds some stops itself, so
that what supervises it (compose's restart policy, `make run`'s supervisor, Kubernetes) starts
a fresh one. Celery and kombu recover from most broker trouble on their own, but a consumer can
come out of a restart of the broker, or a partition, connected and idle; a process that is
alive and consumes nothing is worse than one that exits: nothing notices it, and the orders on
its queue wait for ever (the sweeper only sends them more messages to ignore).

Stalled means: for STALL_S, messages waited on the worker's queue, the worker ran and held
none, and received none. A busy worker (a task running or held for its countdown) is not
stalled, and neither is one whose broker is away (that is the reconnecting Celery does)."""
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.signals import task_received
from celery.worker import state

if TYPE_CHECKING:
    from runtime.broker import Broker

log = logging.getLogger("saga.watchdog")

STALL_S = 60.0
CHECK_EVERY_S = 5.0
EXIT_AFTER_S = 30.0  # a warm shutdown that does not end in this long is cut short


class Stall:
    """How long messages have waited on the queue while the worker took none of them and held
    nothing: fed one look at a time, so that a message that has only just arrived on an idle
    worker's queue does not count as waiting since the worker went idle."""

    def __init__(self, now: float) -> None:
        self.since: float | None = None  # when the waiting began, None while nothing waits
        self.last_received = now

    def look(self, depth: int | None, holding: int, now: float) -> float:
        if not depth or holding:
            self.since = None
            return 0.0
        if self.since is None:
            self.since = now
        return now - max(self.since, self.last_received)


def watchdog_step(broker: "Broker", queue: str, stall_s: float = STALL_S,
                  every_s: float = CHECK_EVERY_S) -> type[bootsteps.StartStopStep]:
    """A worker bootstep watching the consumer of `queue` from a thread of the main process."""
    stopping = threading.Event()
    stall = Stall(time.monotonic())

    def received(**_: Any) -> None:
        stall.last_received = time.monotonic()

    def run() -> None:
        depths = broker.depths()
        while not stopping.wait(every_s):
            holding = len(state.active_requests) + len(state.reserved_requests)
            # None while the broker is away: Celery is reconnecting, nothing to judge
            waiting = depths.depth(queue)
            stalled_s = stall.look(waiting, holding, time.monotonic())
            if stalled_s >= stall_s:
                log.error("consumer stalled: %s messages wait on queue %s and this worker has "
                          "taken none for %.0f s; stopping so that it is restarted",
                          waiting, queue, stalled_s)
                stopping.set()
                threading.Timer(EXIT_AFTER_S, os._exit, args=(70,)).start()
                os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown

    class ConsumerWatchdog(bootsteps.StartStopStep):
        def start(self, parent: Any) -> None:
            task_received.connect(received, weak=False)
            stall.last_received = time.monotonic()
            threading.Thread(target=run, name="consumer-watchdog", daemon=True).start()

        def stop(self, parent: Any) -> None:
            stopping.set()

        def terminate(self, parent: Any) -> None:
            stopping.set()

    return ConsumerWatchdog
