"""The whole system as real processes (API, saga worker, three services) on a real Redis and
SQLite, with a real SMTP server of its own so a test can take it down."""
from collections.abc import Callable, Iterator

import httpx
import pytest

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.redis_dbs import RedisDbs


@pytest.fixture(scope="session")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailDropServer]:
    with MailDropServer(tmp_path_factory.mktemp("e2e-mail")) as server:
        yield server


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory, redis_dbs: RedisDbs, mail: MailDropServer,
           free_port: Callable[[], int]) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("e2e-var")
    with redis_dbs.lend() as redis_url:
        env = {
            "REDIS_URL": redis_url,
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
