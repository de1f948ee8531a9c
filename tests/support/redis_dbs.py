"""Redis databases for tests, handed out by one pool so that no test chooses a number by hand
and no two tests running in one session share a database."""
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis


class RedisDbs:
    """The databases of one Redis server, DB 0 excepted (a developer's default), each lent to
    one user at a time and emptied before it is lent."""

    def __init__(self, url: str, databases: int = 16) -> None:
        self.base = url.rsplit("/", 1)[0]
        self.free = list(range(1, databases))
        self.lock = threading.Lock()

    def take(self) -> str:
        with self.lock:
            if not self.free:
                raise RuntimeError("every Redis DB of the test server is lent out: give one "
                                   "back (use the `redis_db` fixture, or `lend()`)")
            db = self.free.pop(0)
        url = f"{self.base}/{db}"
        redis.Redis.from_url(url).flushdb()
        return url

    def give_back(self, url: str) -> None:
        with self.lock:
            self.free.insert(0, int(url.rsplit("/", 1)[1]))

    @contextmanager
    def lend(self) -> Iterator[str]:
        url = self.take()
        try:
            yield url
        finally:
            self.give_back(url)
