"""Load shedding: how deep the first step's queue is, read by a thread once a second (never by
a request, which must not wait on the broker), so that POST /orders can refuse new work with a
503 while the backlog is past MAX_QUEUE_DEPTH instead of deepening it."""
import logging
import threading
import time

from runtime.broker import QueueDepths

log = logging.getLogger("saga.api")


class Backlog:
    def __init__(self, depths: QueueDepths, queue: str, max_depth: int,
                 every_s: float = 1.0) -> None:
        self.queue, self.max_depth, self.every_s = queue, max_depth, every_s
        self.broker = depths
        self.depth = 0  # the last depth read; 0 while the broker cannot say (the outbox holds)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def too_deep(self) -> bool:
        """Whether the last depth read is past the limit; starts the reader on first use."""
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="backlog-depth",
                                               daemon=True)
                self.thread.start()
        return self.depth > self.max_depth

    def _run(self) -> None:
        while True:
            # the broker away (no depth): orders are taken, and wait in the outbox
            self.depth = self.broker.depth(self.queue) or 0
            time.sleep(self.every_s)
