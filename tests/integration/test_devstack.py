"""The local stack's parts, as real processes: embedded Redis and SMTP, the supervisor, the
launcher."""
import io
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import devstack
from devstack.redis_server import EmbeddedRedis
from devstack.smtp import MailDropServer, read_mails
from devstack.stack import DATABASES, Stack, StackNotReady
from devstack.supervisor import ProcessFailed, Supervisor

pytestmark = pytest.mark.timeout(60)


def wait_for(condition: Callable[[], object], timeout: float = 5.0,
             what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """Dead, or a zombie only its (non-us) parent can still reap."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def client(url: str) -> redis.Redis:
    # no retries: a refused connection should fail the check at once, not after seconds of backoff
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1,
                                retry=Retry(NoBackoff(), 0))


# -- embedded Redis ------------------------------------------------------------------------------

def test_embedded_redis_answers_and_comes_back_on_the_same_port(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        port = server.port
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert client(server.url).ping()

        server.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            client(server.url).ping()

        server.start()
        assert server.port == port
        assert client(server.url).ping()


@pytest.mark.parametrize(("appendonly", "survives"), [(True, True), (False, False)])
def test_a_key_survives_a_restart_only_with_appendonly(tmp_path: Path, appendonly: bool,
                                                       survives: bool) -> None:
    with EmbeddedRedis(tmp_path, appendonly=appendonly) as server:
        client(server.url).set("order:1", "pending")
        server.stop()
        server.start()
        assert client(server.url).get("order:1") == (b"pending" if survives else None)


def test_embedded_redis_refuses_to_evict_keys(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        policy = client(server.url).config_get("maxmemory-policy")
        assert policy == {"maxmemory-policy": "noeviction"}


# -- mail drop -----------------------------------------------------------------------------------

def send(port: int, subject: str, to: str = "ada@example.com") -> None:
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"About {subject}.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.send_message(message)


def test_a_sent_mail_lands_in_the_maildir(maildrop: MailDropServer) -> None:
    subject = f"Order {os.urandom(4).hex()} confirmed"
    send(maildrop.port, subject)

    mails = [m for m in read_mails(maildrop.maildir) if m["Subject"] == subject]
    assert len(mails) == 1
    assert mails[0]["To"] == "ada@example.com"
    assert mails[0].get_content() == f"About {subject}.\n"
    # nothing half-written is left next to the .eml files
    assert list((maildrop.maildir / "tmp").iterdir()) == []


def test_mails_are_read_back_in_arrival_order(tmp_path: Path) -> None:
    with MailDropServer(tmp_path) as server:
        for n in range(5):
            send(server.port, f"mail {n}")
    assert [m["Subject"] for m in read_mails(tmp_path)] == [f"mail {n}" for n in range(5)]


def test_mail_drop_outage_then_recovery_on_the_same_port(tmp_path: Path) -> None:
    server = MailDropServer(tmp_path).start()
    try:
        port = server.port
        assert port != 0
        send(port, "before")

        server.stop()
        with pytest.raises(OSError):  # ConnectionRefusedError: the outage a sender must survive
            send(port, "during")

        server.start()
        assert server.port == port
        send(port, "after")
    finally:
        server.stop()
    assert [m["Subject"] for m in read_mails(tmp_path)] == ["before", "after"]


# -- supervisor ----------------------------------------------------------------------------------

PY = sys.executable


def test_a_child_that_exits_is_restarted_and_counted(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(log_dir=tmp_path / "log", out=out, restart_interval=0.2)
    try:
        supervisor.add("flaky", [PY, "-c", "print('starting'); raise SystemExit(3)"])
        supervisor.add("steady", [PY, "-c", "import time; print('up'); time.sleep(60)"])
        wait_for(lambda: supervisor.restarts["flaky"] >= 2, what="two restarts")
        steady_pid = supervisor.pid("steady")
    finally:
        supervisor.stop()

    assert supervisor.restarts["steady"] == 0
    output = out.getvalue()
    assert "flaky exited unexpectedly (exit code 3); restarted it (restart #1" in output
    assert "flaky        | starting" in output
    assert "steady       | up" in output
    assert (tmp_path / "log" / "flaky.log").read_text().count("starting\n") >= 2
    assert steady_pid is not None and gone(steady_pid)


def test_without_relaying_a_child_writes_its_log_itself_and_its_tail_is_still_shown(
        tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(log_dir=tmp_path / "log", out=out, restart_interval=0.2, relay=False)
    try:
        supervisor.add("talker", [PY, "-c", "print('\\n'.join(f'line {i}' for i in range(500)))"
                                  "; import time; time.sleep(60)"])
        wait_for(lambda: "line 499" in supervisor.recent_output("talker", lines=3),
                 what="the last line in the log's tail")
    finally:
        supervisor.stop()
    assert "line 497" in supervisor.recent_output("talker", lines=3)
    assert "line 496" not in supervisor.recent_output("talker", lines=3)
    assert (tmp_path / "log" / "talker.log").read_text().count("\n") == 500
    assert "talker" not in out.getvalue()  # nothing of it on the terminal


def test_restarts_of_a_crashing_child_are_spaced_out(tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO(), restart_interval=0.3)
    try:
        supervisor.add("crash", [PY, "-c", "raise SystemExit(1)"])
        time.sleep(1.0)
    finally:
        supervisor.stop()
    assert 2 <= supervisor.restarts["crash"] <= 4  # not the hundreds a tight loop would do


def test_a_child_without_restart_stays_down(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out, restart_interval=0.1)
    try:
        supervisor.add("once", [PY, "-c", "raise SystemExit(4)"], restart=False)
        wait_for(lambda: "not restarting" in out.getvalue(), what="the exit to be noticed")
        time.sleep(0.3)
    finally:
        supervisor.stop()
    assert supervisor.restarts["once"] == 0
    assert "once exited (exit code 4); not restarting it" in out.getvalue()


STUBBORN = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    print("grandchild", grandchild.pid, flush=True)
    time.sleep(60)
""")


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    try:
        supervisor.add("stubborn", [PY, "-c", STUBBORN])
        wait_for(lambda: "grandchild" in supervisor.recent_output("stubborn"),
                 what="the grandchild")
        child = supervisor.pid("stubborn")
        assert child is not None
        grandchild = int(supervisor.recent_output("stubborn").split("grandchild ")[1].split()[0])
        # its own session: Ctrl-C in our terminal does not reach it directly
        assert os.getpgid(child) == child != os.getpgrp()
        assert os.getpgid(grandchild) == child
    finally:
        started = time.monotonic()
        supervisor.stop(timeout=0.5)
        took = time.monotonic() - started

    assert gone(child) and gone(grandchild)
    assert took < 5
    assert "stubborn did not stop within 0.5 s; killing it" in out.getvalue()


def test_stop_is_prompt_when_children_honour_sigterm() -> None:
    supervisor = Supervisor(out=io.StringIO())
    for n in range(3):
        supervisor.add(f"sleeper-{n}",
                       [PY, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    wait_for(lambda: all("up" in supervisor.recent_output(f"sleeper-{n}") for n in range(3)))
    pids = [supervisor.pid(f"sleeper-{n}") for n in range(3)]
    started = time.monotonic()
    supervisor.stop(timeout=15)
    assert time.monotonic() - started < 3
    assert all(pid is not None and gone(pid) for pid in pids)
    assert all(count == 0 for count in supervisor.restarts.values())  # stopping is not dying


def test_run_once_returns_the_output_or_raises_with_it() -> None:
    supervisor = Supervisor(out=io.StringIO())
    assert supervisor.run_once("ok", [PY, "-c", "print('database at head')"]) == "database at head"
    with pytest.raises(ProcessFailed, match=r"(?s)exit code 2.*no such table") as failed:
        supervisor.run_once("bad", [PY, "-c", "import sys; print('no such table'); sys.exit(2)"])
    assert failed.value.returncode == 2


# -- the launcher, against stand-in services -----------------------------------------------------

# Stands in for `python -m orchestrator|services.X migrate|api|worker`: records how it was started,
# serves /healthz when it is the API, and otherwise idles like a worker.
STAND_IN = textwrap.dedent("""
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    KEYS = ["REDIS_URL", "SMTP_HOST", "SMTP_PORT", "API_HOST", "API_PORT", "PYTHONPATH", "EXTRA",
            "ORCHESTRATOR_DATABASE_URL", "PAYMENT_DATABASE_URL", "INVENTORY_DATABASE_URL",
            "NOTIFY_DATABASE_URL"]
    command = sys.argv[1]
    with open(os.environ["STAND_IN_LOG"], "a") as log:
        log.write(json.dumps({"module": __spec__.name.removesuffix(".__main__"),
                              "argv": sys.argv[1:], "pid": os.getpid(), "cwd": os.getcwd(),
                              "env": {k: os.environ.get(k) for k in KEYS}}) + "\\n")
    if os.environ.get("STAND_IN_FAIL") == command:
        print(f"{command} exploding on purpose")
        sys.exit(1)
    if command == "migrate":
        sys.exit(0)
    if command == "api":
        class Health(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/healthz" else 404)
                self.end_headers()
            def log_message(self, *args):
                pass
        HTTPServer((os.environ["API_HOST"], int(os.environ["API_PORT"])), Health).serve_forever()
    time.sleep(600)
""")


@pytest.fixture
def stand_in_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for package in ("orchestrator", "services/payment", "services/inventory", "services/notify"):
        (root / package).mkdir(parents=True)
        (root / package / "__main__.py").write_text(STAND_IN)
    return root


def stand_in_stack(tmp_path: Path, repo: Path, free_port: Callable[[], int],
                   **kwargs: object) -> Stack:
    env = {"REDIS_URL": "", "SMTP_HOST": "", "STAND_IN_LOG": str(tmp_path / "calls.jsonl"),
           **dict.fromkeys(("ORCHESTRATOR_DATABASE_URL", "PAYMENT_DATABASE_URL",
                            "INVENTORY_DATABASE_URL", "NOTIFY_DATABASE_URL", "API_HOST"), "")}
    env.update(kwargs.pop("env", {}))  # type: ignore[arg-type]
    return Stack(tmp_path / "var", env=env, api_port=free_port(), repo_root=repo,
                 out=io.StringIO(), **kwargs)  # type: ignore[arg-type]


def calls(tmp_path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_stack_migrates_then_starts_every_process_with_the_environment(
        tmp_path: Path, stand_in_repo: Path, free_port: Callable[[], int]) -> None:
    stack = stand_in_stack(tmp_path, stand_in_repo, free_port, workers={"inventory": 2},
                           process_env={"inventory-2": {"EXTRA": "only-here"}})
    with stack:
        stack.wait_ready(timeout=20)
        assert stack.maildir == (tmp_path / "var" / "mail").resolve()
        assert client(stack.env["REDIS_URL"]).ping()
        send(int(stack.env["SMTP_PORT"]), "through the stack")
        wait_for(lambda: len(calls(tmp_path)) == 10, what="every process to start")
        started = calls(tmp_path)
        redis_url = stack.env["REDIS_URL"]

    migrations = [(c["module"], c["argv"]) for c in started[:4]]
    assert migrations == [("orchestrator", ["migrate"]), ("services.payment", ["migrate"]),
                          ("services.inventory", ["migrate"]), ("services.notify", ["migrate"])]
    processes = sorted((c["module"], *c["argv"]) for c in started[4:])
    assert processes == [
        ("orchestrator", "api"), ("orchestrator", "saga-worker"),
        ("services.inventory", "worker", "--hostname", "inventory-1@%h"),
        ("services.inventory", "worker", "--hostname", "inventory-2@%h"),
        ("services.notify", "worker"), ("services.payment", "worker")]

    var = (tmp_path / "var").resolve()
    for call in started:
        env = call["env"]
        assert call["cwd"] == str(stand_in_repo)
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(stand_in_repo)
        assert env["REDIS_URL"] == redis_url and env["SMTP_HOST"] == "127.0.0.1"
        assert env["ORCHESTRATOR_DATABASE_URL"] == f"sqlite:///{var}/orchestrator.db"
        assert env["INVENTORY_DATABASE_URL"] == f"sqlite:///{var}/inventory.db"
        assert env["EXTRA"] == ("only-here" if "inventory-2@%h" in call["argv"] else None)

    assert [m["Subject"] for m in read_mails(var / "mail")] == ["through the stack"]
    # stopped: every process, the mail server and Redis
    assert all(gone(c["pid"]) for c in started)
    with pytest.raises(redis.exceptions.ConnectionError):
        client(redis_url).ping()
    assert (var / "log" / "api.log").exists()


def test_stack_uses_servers_it_is_given_instead_of_starting_its_own(
        tmp_path: Path, stand_in_repo: Path, free_port: Callable[[], int], redis_url: str) -> None:
    given = {"REDIS_URL": redis_url, "SMTP_HOST": "mail.example.com", "SMTP_PORT": "2525",
             "NOTIFY_DATABASE_URL": "postgresql+psycopg://u@db/notify"}
    with stand_in_stack(tmp_path, stand_in_repo, free_port, env=given) as stack:
        stack.wait_ready(timeout=20)
        assert stack.redis is None and stack.smtp is None and stack.maildir is None
    env = calls(tmp_path)[0]["env"]
    assert {k: env[k] for k in given} == given
    assert not (tmp_path / "var" / "redis").exists()


def test_stack_not_ready_shows_why(tmp_path: Path, stand_in_repo: Path,
                                   free_port: Callable[[], int]) -> None:
    with (stand_in_stack(tmp_path, stand_in_repo, free_port, env={"STAND_IN_FAIL": "api"}) as stack,
          pytest.raises(StackNotReady, match="api exploding on purpose")):
        stack.wait_ready(timeout=1)


def test_a_failed_migration_stops_the_start_and_leaves_nothing_running(
        tmp_path: Path, stand_in_repo: Path, free_port: Callable[[], int]) -> None:
    stack = stand_in_stack(tmp_path, stand_in_repo, free_port, env={"STAND_IN_FAIL": "migrate"})
    with pytest.raises(ProcessFailed,
                       match=r"(?s)python -m orchestrator migrate.*migrate exploding"):
        stack.start()
    assert [c["argv"] for c in calls(tmp_path)] == [["migrate"]]  # the first failure stops it
    assert stack.redis is not None and not stack.redis.running
    assert stack.smtp is not None and not stack.smtp.running


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_devstack_run_prints_how_to_use_it_and_stops_cleanly_on_a_signal(
        tmp_path: Path, stand_in_repo: Path, free_port: Callable[[], int],
        stop_signal: signal.Signals) -> None:
    # A copy of devstack inside the stand-in repo drives the stand-ins instead of the real services.
    shutil.copytree(Path(devstack.__file__).parent, stand_in_repo / "devstack",
                    ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = {**os.environ, "REDIS_URL": "", "SMTP_HOST": "", "API_HOST": "", "API_PORT": "",
           "STAND_IN_LOG": str(tmp_path / "calls.jsonl"),
           **dict.fromkeys(DATABASES, "")}
    launcher = subprocess.Popen([PY, "-m", "devstack", "run", "--port", str(port)],
                                cwd=stand_in_repo, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    assert launcher.stdout is not None
    lines = []
    try:
        for line in launcher.stdout:
            lines.append(line)
            if line.startswith("curl "):
                break
        assert lines[-1].rstrip("\n") == (
            f"curl -s -X POST http://127.0.0.1:{port}/orders -H 'content-type: application/json' "
            """-d '{"customer_email":"ada@example.com","items":[{"sku":"BOOK-1","quantity":2}],"""
            """"payment_token":"tok_visa"}'""")
        banner = "".join(lines)
        assert f"http://127.0.0.1:{port}/docs" in banner
        assert f"pages at http://127.0.0.1:{port}/ui" in banner
        assert "var/mail/" in banner
        # the API's metrics, and each worker's on a port of its own
        assert f"metrics at http://127.0.0.1:{port}/metrics" in banner
        worker_ports = re.findall(r"(saga|payment|inventory|notify) http://127.0.0.1:(\d+)/metrics",
                                  banner)
        assert [w for w, _ in worker_ports] == ["saga", "payment", "inventory", "notify"]
        assert len({p for _, p in worker_ports}) == 4
        launcher.send_signal(stop_signal)
        rest, _ = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, "".join(lines) + rest
    assert rest.rstrip().endswith("devstack     | stopped")
    assert all(gone(c["pid"]) for c in calls(tmp_path))
    assert not (stand_in_repo / "var" / "redis" / "redis.pid").exists()  # Redis shut down too
