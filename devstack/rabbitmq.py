"""RabbitMQ for the tests and chaos runs, real either way: a vhost of our own on a RabbitMQ that
is already running (created and deleted with `rabbitmqctl`), or a node of our own
(`rabbitmq-server` with its own port, data and config), which a chaos run can restart."""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from devstack.net import free_port

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


def unavailable(port: int = 5672) -> str | None:
    """Why a vhost of our own cannot be had on the RabbitMQ at HOST:port, or None if it can."""
    if shutil.which("rabbitmqctl") is None:
        return "no `rabbitmqctl` on PATH (Debian's rabbitmq-server package has it)"
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return f"no RabbitMQ listening on {HOST}:{port}"
    return None


class Vhost:
    """A vhost of our own on the running RabbitMQ, guest allowed everything in it; deleted, with
    everything in it, on exit."""

    def __init__(self, prefix: str = "saga_test", port: int = 5672, node: str | None = None):
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        self.port, self.node = port, node

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/{self.name}"

    def __enter__(self) -> "Vhost":
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._ctl("delete_vhost", self.name)

    def _ctl(self, *args: str) -> None:
        node = ["-n", self.node] if self.node else []
        subprocess.run(["rabbitmqctl", *node, "-q", *args], check=True, capture_output=True,
                       timeout=60)


class RabbitNode:
    """A RabbitMQ node of our own: its own port, Erlang distribution port, data and config, no
    plugins. Debian's `rabbitmq-server` runs the node as user rabbitmq, which may not reach
    `log_dir` (pytest's temporary directories are root's alone): its data lives in a directory
    of its own under the system's temporary directory, handed to that user and removed on exit;
    what the server prints goes to `log_dir`/rabbitmq-server.log. stop() and start() keep the
    data and the port: messages in its durable (quorum) queues survive, as on a real restart."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.data_dir = Path(tempfile.mkdtemp(prefix="saga-rabbitmq-"))
        self.port = free_port(HOST)
        self.name = f"saga{self.port}@localhost"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable() -> str | None:
        if shutil.which("rabbitmq-server") is None:
            return "no `rabbitmq-server` on PATH (Debian's rabbitmq-server package)"
        if os.geteuid() != 0:
            return "a RabbitMQ node of our own is started as root (it runs as user rabbitmq)"
        return None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}//"

    @property
    def pid(self) -> int | None:
        """The node's launcher: its process tree is the node (the Erlang VM and its helpers)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> "RabbitNode":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = {HOST}:{self.port}\n")
        (self.data_dir / "env.conf").write_text(f"ERL_EPMD_ADDRESS={HOST}\n")
        (self.data_dir / "plugins").touch()
        shutil.chown(self.data_dir, "rabbitmq", "rabbitmq")
        for path in self.data_dir.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
        env = {**os.environ,
               "RABBITMQ_NODENAME": self.name, "RABBITMQ_NODE_PORT": str(self.port),
               "RABBITMQ_DIST_PORT": str(free_port(HOST)),
               "RABBITMQ_CONF_ENV_FILE": str(self.data_dir / "env.conf"),
               "RABBITMQ_CONFIG_FILE": str(self.data_dir / "rabbitmq.conf"),
               "RABBITMQ_MNESIA_BASE": str(self.data_dir / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.data_dir / "log"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.data_dir / "plugins"),
               "RABBITMQ_PID_FILE": str(self.data_dir / "pid")}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(["rabbitmq-server"], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"rabbitmq-server did not start; see {self.log_path} "
                                       f"and {self.data_dir / 'log'}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """A clean stop (`rabbitmqctl stop`), the whole process group killed if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        subprocess.run(["rabbitmqctl", "-n", self.name, "-q", "stop"], capture_output=True,
                       timeout=60, check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    @property
    def log_path(self) -> Path:
        return self.log_dir / "rabbitmq-server.log"

    def queues(self) -> list[str]:
        """`name ready unacked` of every queue on the node (rabbitmqctl list_queues)."""
        out = subprocess.run(["rabbitmqctl", "-n", self.name, "-q", "--no-table-headers",
                              "list_queues", "name", "messages_ready",
                              "messages_unacknowledged"],
                             capture_output=True, text=True, timeout=60, check=False)
        return out.stdout.splitlines() or [out.stderr.strip()]

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "RabbitNode":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
