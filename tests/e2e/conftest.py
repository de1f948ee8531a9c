"""The whole system as real processes (API, saga worker, three services) on a real Redis and
SQLite, with a real SMTP server of its own so a test can take it down."""
from collections.abc import Callable, Iterator

import httpx
import pytest

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.brokers import broker_env
from tests.support.redis_dbs import RedisDbs


@pytest.fixture(scope="session")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailDropServer]:
    with MailDropServer(tmp_path_factory.mktemp("e2e-mail")) as server:
        yield server


@pytest.fixture(scope="session")
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           redis_dbs: RedisDbs, mail: MailDropServer,
           free_port: Callable[[], int]) -> Iterator[Stack]:
    """On Redis; a test marked `on_each_broker_kind` (tests/support/brokers.py) runs on each."""
    kind = getattr(request, "param", "redis")
    var = tmp_path_factory.mktemp(f"e2e-var-{kind}")
    with broker_env(kind, redis_dbs, tmp_path_factory.mktemp(f"e2e-{kind}")) as broker:
        env = {
            **broker,
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
            # fast backoff so retries finish within a test, same code paths as production
            "PAYMENT_RETRY_BACKOFF_S": "0.05", "GATEWAY_TIMEOUT_MS": "20",
            "NOTIFY_RETRY_BACKOFF_S": "0.2",
            **{f"{name.upper()}_DATABASE_URL": f"sqlite:///{var}/{name}.db"
               for name in ("orchestrator", "payment", "inventory", "notify")},
        }
        with Stack(var, env=env, api_port=free_port()) as stack:
            stack.wait_ready(timeout=90)
            yield stack


@pytest.fixture(scope="session")
def api(system: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.api_url, timeout=30) as client:
        yield client


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test not marked `on_each_broker_kind` runs on Redis, sharing the one Redis system with the
    # marked tests' Redis run (an unparametrized `system` would be a second, separate system).
    # (a module whose own `system` has params of its own is left alone)
    marked = any("system" in str(mark.args[0])
                 for mark in metafunc.definition.iter_markers("parametrize"))
    definitions = metafunc._arg2fixturedefs.get("system") or ()
    ours = bool(definitions) and definitions[-1].func is system.__wrapped__  # type: ignore[attr-defined]
    if ours and not marked:
        metafunc.parametrize("system", ["redis"], indirect=True)
