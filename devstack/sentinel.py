"""Redis behind Sentinel, all of it real processes of ours: a master, a replica and three
sentinels (a quorum of two), for the tests and chaos runs that kill the master and watch a
replica take over. `BROKER_URL=group.url BROKER_SENTINEL_MASTER=group.master_name`."""
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.net import free_port
from devstack.redis_server import HOST, EmbeddedRedis, redis_server_binary

MASTER_NAME = "saga"
# how long a master may not answer before the sentinels call it down; a failover then takes
# about this long again (the election and the replica's promotion)
DOWN_AFTER_MS = 1000


class SentinelProcess(EmbeddedRedis):
    """redis-server in sentinel mode, watching the master. A sentinel rewrites its own config
    file (what it learnt of replicas and failovers), so it gets a file of its own."""

    def __init__(self, data_dir: Path, master: EmbeddedRedis) -> None:
        super().__init__(data_dir)
        self.master = master

    def _argv(self) -> list[str]:
        config = self.data_dir / "sentinel.conf"
        config.write_text("\n".join([
            f"bind {self.host}", f"port {self.port}", f"dir {self.data_dir}",
            f"pidfile {self.pid_path}", 'logfile ""',
            f"sentinel monitor {MASTER_NAME} {self.master.host} {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1", ""]))
        return [str(redis_server_binary()), str(config), "--sentinel"]


class SentinelGroup:
    def __init__(self, data_dir: Path) -> None:
        data_dir = Path(data_dir).resolve()
        # appendonly on both: a server that restarts comes back with what it had
        self.master = EmbeddedRedis(data_dir / "master", appendonly=True)
        self.replica_dir = data_dir / "replica"
        self.replica: EmbeddedRedis | None = None
        self.sentinels = [SentinelProcess(data_dir / f"sentinel-{n}", self.master)
                          for n in (1, 2, 3)]
        self.master_name = MASTER_NAME

    @property
    def url(self) -> str:
        """kombu's form: every sentinel, `;`-separated."""
        return ";".join(f"sentinel://{s.host}:{s.port}" for s in self.sentinels)

    def start(self) -> "SentinelGroup":
        self.master.start()
        self.replica = EmbeddedRedis(self.replica_dir, appendonly=True, port=free_port(HOST),
                                     args=["--replicaof", self.master.host,
                                           str(self.master.port)])
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_until(lambda: self._replicas_seen() >= 1, "the sentinels to see the replica")
        return self

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            if server is not None:
                server.stop()

    def current_master(self) -> tuple[str, int] | None:
        """The master's address as a sentinel answers it, or None if none answers."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                host, port = self._ask(sentinel, "SENTINEL", "get-master-addr-by-name",
                                       MASTER_NAME)
                return str(host), int(port)
            except (redis.RedisError, TypeError, ValueError):
                continue
        return None

    def kill_master(self) -> EmbeddedRedis:
        """SIGKILL the server that is master now (the sentinels' answer); returns it."""
        address = self.current_master()
        victim = next(s for s in (self.master, self.replica)
                      if s is not None and (s.host, s.port) == address)
        victim.kill()
        return victim

    def wait_promoted(self, old: tuple[str, int], timeout: float = 30.0) -> tuple[str, int]:
        """Until the sentinels name another master than `old`, and it answers as master."""
        found: list[tuple[str, int]] = []

        def promoted() -> bool:
            now = self.current_master()
            if now is None or now == old:
                return False
            client = redis.Redis(host=now[0], port=now[1], socket_timeout=1,
                                 retry=Retry(NoBackoff(), 0))
            try:
                role = client.execute_command("ROLE")[0]  # type: ignore[no-untyped-call]
            except redis.RedisError:
                return False
            finally:
                client.close()
            found.append(now)
            return str(role.decode() if isinstance(role, bytes) else role) == "master"

        self.wait_until(promoted, f"a master other than {old}", timeout)
        return found[-1]

    def _replicas_seen(self) -> int:
        seen = []
        for sentinel in self.sentinels:
            try:
                seen.append(len(self._ask(sentinel, "SENTINEL", "replicas", MASTER_NAME)))
            except redis.RedisError:
                seen.append(0)
        return min(seen)

    @staticmethod
    def _ask(server: EmbeddedRedis, *command: str) -> list[Any]:
        client = redis.Redis(host=server.host, port=server.port, socket_timeout=1,
                             retry=Retry(NoBackoff(), 0), decode_responses=True)
        try:
            answer: Any = client.execute_command(*command)  # type: ignore[no-untyped-call]
            return cast(list[Any], answer)
        finally:
            client.close()

    @staticmethod
    def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.1)

    def __enter__(self) -> "SentinelGroup":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
