"""A PostgreSQL cluster of our own (`initdb`, `pg_ctl`), for the chaos suite and the tests that
restart or stop the database: never the shared server. Needs PostgreSQL's server binaries (on
Debian, the `postgresql` package); `available()` says why not where they are missing.

PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user (its data
directory is handed to that user)."""
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psycopg

from devstack.net import free_port

HOST = "127.0.0.1"


def bin_dir() -> Path | None:
    """Debian keeps the server's binaries out of PATH, one directory per major version."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    if bin_dir() is None:
        return "no PostgreSQL server binaries (pg_ctl, initdb): install Debian's postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
    return None


class PostgresCluster:
    """One cluster under `base_dir` (its data in `data/`, its log in `postgres.log`) on its own
    port, trust authentication on 127.0.0.1. stop() and start() again keep the port and the
    data. As root, every directory above `base_dir` must be open to the `postgres` user."""

    def __init__(self, base_dir: Path, port: int | None = None, host: str = HOST,
                 launcher: Sequence[str] = ()) -> None:
        # host and launcher: another host's address, and how to start a process there
        # (devstack.hosts); by default this machine's loopback
        self.host, self.launcher = host, list(launcher)
        self.base_dir = Path(base_dir).resolve()
        self.data_dir = self.base_dir / "data"
        self.port = port or (free_port(HOST) if not launcher else 5432)
        why = available()
        if why:
            raise RuntimeError(why)
        found = bin_dir()
        assert found is not None
        self.bin = found

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    def start(self) -> "PostgresCluster":
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_path), "-o",
                     f"-p {self.port} -c listen_addresses={self.host} -k {self.data_dir} "
                     "-c fsync=off -c full_page_writes=off -c max_connections=200")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are cut, as in a failover or an operator's restart."""
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("restart", "-w", "-t", "60", "-m", mode, "-l", str(self.log_path), "-o",
                     f"-p {self.port} -c listen_addresses={self.host} -k {self.data_dir} "
                     "-c fsync=off -c full_page_writes=off -c max_connections=200")

    def create_database(self, name: str) -> str:
        with psycopg.connect(host=self.host, port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.base_dir)
        self._own(self.data_dir)
        self._run([str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                   "-A", "trust", "--no-sync", "-E", "UTF8"])
        if self.host != HOST:  # on a host of its own: its clients come from the other hosts
            with open(self.data_dir / "pg_hba.conf", "a") as hba:
                hba.write("host all all 0.0.0.0/0 trust  # a test cluster's private network\n")

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), *args])

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        argv = [*self.launcher, *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}")

    def __enter__(self) -> "PostgresCluster":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop("immediate")
