"""Load shedding: how deep the first step's queue is, read by a thread once a second (never by
a request, which must not wait on the broker), so that POST /orders can refuse new work with a
503 while the backlog is past MAX_QUEUE_DEPTH instead of deepening it."""
import logging
import threading
import time
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("saga.api")


class Backlog:
    def __init__(self, redis_url: str, queue: str, max_depth: int,
                 every_s: float = 1.0) -> None:
        self.queue, self.max_depth, self.every_s = queue, max_depth, every_s
        self.client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1,
                                           retry=Retry(NoBackoff(), 0))
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
            try:
                self.depth = cast(int, self.client.llen(self.queue))  # a sync client's reply
            except redis.RedisError:
                self.depth = 0  # the broker away: orders are taken, and wait in the outbox
            time.sleep(self.every_s)
