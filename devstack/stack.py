"""The whole system on one machine: broker, mail, migrations, the API and every worker.

Anything the environment already provides (BROKER_URL or REDIS_URL, SMTP_HOST, database URLs)
is used as is; only what is missing is started here, so the same launcher works on a bare laptop
and against real infrastructure.
"""
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from devstack.hosts import Network
from devstack.net import port_is_free, wait_ok
from devstack.redis_server import EmbeddedRedis
from devstack.smtp import MailDropServer
from devstack.supervisor import Out, Supervisor

REPO_ROOT = Path(__file__).resolve().parent.parent

# The variables of the public interface (docs/interface.md, "Configuration").
CONFIGURATION = ("BROKER_URL", "BROKER_SENTINEL_MASTER", "REDIS_URL", "SMTP_HOST", "SMTP_PORT",
                 "API_HOST", "API_PORT",
                 "ORCHESTRATOR_DATABASE_URL", "PAYMENT_DATABASE_URL", "INVENTORY_DATABASE_URL",
                 "NOTIFY_DATABASE_URL")

DATABASES = {
    "ORCHESTRATOR_DATABASE_URL": "orchestrator",
    "PAYMENT_DATABASE_URL": "payment",
    "INVENTORY_DATABASE_URL": "inventory",
    "NOTIFY_DATABASE_URL": "notify",
}

# Sequential on purpose: each is quick, and interleaved output would hide which one failed.
MIGRATIONS = [
    ["-m", "orchestrator", "migrate"],
    ["-m", "services.payment", "migrate"],
    ["-m", "services.inventory", "migrate"],
    ["-m", "services.notify", "migrate"],
]

# Long-running processes, by kind; a worker kind can be scaled with `workers={"inventory": 2}`.
PROCESSES = {
    "api": ["-m", "orchestrator", "api"],
    "saga": ["-m", "orchestrator", "saga-worker"],
    "payment": ["-m", "services.payment", "worker"],
    "inventory": ["-m", "services.inventory", "worker"],
    "notify": ["-m", "services.notify", "worker"],
}


class StackNotReady(RuntimeError):
    """The API did not answer /healthz in time; the message has every child's recent output."""


class Stack:
    """Start with start() (or `with Stack(...) as stack:`), then wait_ready(); stop() undoes all."""

    def __init__(self, var_dir: Path, env: Mapping[str, str] | None = None,
                 api_port: int | None = None, *, workers: Mapping[str, int] | None = None,
                 process_env: Mapping[str, Mapping[str, str]] | None = None,
                 redis_appendonly: bool = True, repo_root: Path = REPO_ROOT,
                 out: Out | None = None, relay: bool = True,
                 network: Network | None = None, metrics_from: int | None = None) -> None:
        # network: spread over hosts (devstack.hosts): the embedded broker on `broker`, the API
        # and the saga worker on `app`, each service on the host of its name (else `app`), the
        # embedded SMTP server on this machine, the network's gateway
        self.var_dir = Path(var_dir).resolve()
        self.repo_root = Path(repo_root).resolve()
        self.workers = _process_counts(workers or {})
        self.process_env = {k: dict(v) for k, v in (process_env or {}).items()}
        self.network = network
        # each worker serves its metrics on the next free port from here (WORKER_METRICS_PORT)
        self.metrics_from = metrics_from
        self.metrics_ports: dict[str, int] = {}
        self.launchers: dict[str, list[str]] = {}
        if network is not None:
            app = network["app"]
            self.launchers = {kind: (network.hosts.get(kind) or app).command([])
                              for kind in PROCESSES}
        self.redis: EmbeddedRedis | None = None
        self.smtp: MailDropServer | None = None
        self.supervisor = Supervisor(log_dir=self.var_dir / "log", out=out, cwd=self.repo_root,
                                     relay=relay)
        self._started = False

        self._env = {**os.environ, **(env or {})}
        # An empty value counts as unset, so `REDIS_URL= make run` still gets the embedded one.
        for variable in CONFIGURATION:
            if self._env.get(variable) == "":
                del self._env[variable]
        for variable, name in DATABASES.items():
            self._env.setdefault(variable, f"sqlite:///{self.var_dir / name}.db")
        if network is not None:
            self._env["API_HOST"] = network["app"].address
        self._env.setdefault("API_HOST", "127.0.0.1")
        self._env["API_PORT"] = (str(api_port) if api_port is not None
                                 else self._env.get("API_PORT", "8000"))
        self._env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.repo_root), self._env.get("PYTHONPATH")) if p)
        if "REDIS_URL" not in self._env and "BROKER_URL" not in self._env:
            # appendonly: SQLite state survives a restart of `make run`, so the queued messages
            # that belong to it must too, or in-flight sagas would hang forever.
            self.redis = EmbeddedRedis(self.var_dir / "redis", appendonly=redis_appendonly) \
                if network is None else \
                EmbeddedRedis(self.var_dir / "redis", appendonly=redis_appendonly,
                              host=network["broker"].address,
                              launcher=network["broker"].command([]))
        if "SMTP_HOST" not in self._env:
            self.smtp = MailDropServer(self.var_dir / "mail") if network is None else \
                MailDropServer(self.var_dir / "mail", host=network.gateway)

    @property
    def env(self) -> dict[str, str]:
        """The environment every process gets (complete only once start() has run)."""
        return dict(self._env)

    @property
    def maildir(self) -> Path | None:
        """Where mails land as .eml files; None when an external SMTP server is configured."""
        return self.smtp.maildir if self.smtp is not None else None

    @property
    def api_url(self) -> str:
        host = self._env["API_HOST"]
        # A wildcard bind address is not somewhere to connect to; its loopback is.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._env['API_PORT']}"

    def start(self) -> "Stack":
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        say = self.supervisor.say
        self.var_dir.mkdir(parents=True, exist_ok=True)
        host, port = self._env["API_HOST"], int(self._env["API_PORT"])
        if self.workers.get("api", 0) and "api" not in self.launchers \
                and not port_is_free(host, port):
            # Found now rather than as an API crash-looping on "address already in use".
            raise RuntimeError(f"{host}:{port} is already in use; pick another port "
                               f"(python -m devstack run --port N, or API_PORT=N)")
        if self.redis is not None:
            self.redis.start()
            self._env["REDIS_URL"] = self.redis.url
            say(f"redis: embedded redis-server at {self.redis.url} (data in {self.redis.data_dir})")
        elif "BROKER_URL" in self._env:
            say(f"broker: using BROKER_URL={_redact(self._env['BROKER_URL'])}")
        else:
            say(f"redis: using REDIS_URL={_redact(self._env['REDIS_URL'])}")
        if self.smtp is not None:
            self.smtp.start()
            self._env["SMTP_HOST"], self._env["SMTP_PORT"] = self.smtp.host, str(self.smtp.port)
            say(f"smtp: embedded server on {self.smtp.host}:{self.smtp.port}, "
                f"mails land in {self.smtp.maildir}")
        else:
            say(f"smtp: using SMTP_HOST={self._env['SMTP_HOST']} "
                f"SMTP_PORT={self._env.get('SMTP_PORT', '')}")

        for args in MIGRATIONS:
            self.supervisor.run_once("migrate", [sys.executable, *args], env=self._env)

        for kind, count in self.workers.items():
            for index in range(1, count + 1):
                name = kind if count == 1 else f"{kind}-{index}"
                argv = [*self.launchers.get(kind, ()), sys.executable, *PROCESSES[kind]]
                if count > 1:
                    # Celery refuses to share a node name between workers; give each its own.
                    argv += ["--hostname", f"{name}@%h"]
                env = {**self._env, **self.process_env.get(kind, {}),
                       **self.process_env.get(name, {})}
                if kind != "api" and self.metrics_from is not None and kind not in self.launchers:
                    env["WORKER_METRICS_PORT"] = str(self._metrics_port(name))
                self.supervisor.add(name, argv, env=env)

    def _metrics_port(self, name: str) -> int:
        assert self.metrics_from is not None
        port = self.metrics_from
        while port in self.metrics_ports.values() or not port_is_free("127.0.0.1", port):
            port += 1
        self.metrics_ports[name] = port
        return port

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Each worker's metrics endpoint, by process name (with `metrics_from`)."""
        return {name: f"http://127.0.0.1:{port}/metrics"
                for name, port in self.metrics_ports.items()}

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until GET /healthz answers 200; raise StackNotReady with the children's output."""
        if not self._started:
            raise RuntimeError("call start() first")
        try:
            wait_ok(f"{self.api_url}/healthz", timeout)
        except TimeoutError as late:
            raise StackNotReady(f"{late}.\nRecent output of each process:\n"
                                f"{self.supervisor.recent_output()}") from late

    def stop(self) -> None:
        """Children first (they still need the broker to shut down cleanly), then SMTP and Redis."""
        try:
            self.supervisor.stop()
        finally:
            try:
                if self.smtp is not None:
                    self.smtp.stop()
            finally:
                if self.redis is not None:
                    self.redis.stop()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _process_counts(workers: Mapping[str, int]) -> dict[str, int]:
    unknown = set(workers) - set(PROCESSES)
    if unknown:
        raise ValueError(f"unknown process kinds {sorted(unknown)}; known: {sorted(PROCESSES)}")
    counts = {kind: int(workers.get(kind, 1)) for kind in PROCESSES}
    if counts["api"] > 1:
        raise ValueError("one API process only: they would all bind the same port")
    if any(count < 0 for count in counts.values()):
        raise ValueError(f"process counts cannot be negative: {workers}")
    return counts


def _redact(url: str) -> str:
    """The URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"
