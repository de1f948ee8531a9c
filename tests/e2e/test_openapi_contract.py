"""The OpenAPI document is the truth: schemathesis generates requests from it for about a minute
against the running API (every part real) and checks every answer: no server error, no status
or body the document does not declare, no schema-valid request refused (but the one expected
exception, in schemathesis.toml: an order naming a SKU the catalog does not have)."""
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.paths import ROOT
from tests.support.redis_dbs import RedisDbs

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
BUDGET_S = int(os.environ.get("SCHEMATHESIS_MAX_TIME_S", "60"))


def test_schemathesis_finds_nothing_the_document_does_not_say(
        tmp_path: Path, redis_dbs: RedisDbs, mail: MailDropServer,
        free_port: Callable[[], int]) -> None:
    if not SCHEMATHESIS.exists():
        pytest.skip(f"schemathesis is not installed at {SCHEMATHESIS} (make venv installs it)")
    seed = int(os.environ.get("SCHEMATHESIS_SEED", random.randrange(1 << 30)))
    with redis_dbs.lend() as redis_url:
        env = {"REDIS_URL": redis_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
               **{f"{name.upper()}_DATABASE_URL": f"sqlite:///{tmp_path}/{name}.db"
                  for name in ("orchestrator", "payment", "inventory", "notify")}}
        with Stack(tmp_path, env=env, api_port=free_port()) as stack:
            stack.wait_ready(timeout=90)
            run = subprocess.run(
                [str(SCHEMATHESIS), "run", f"{stack.api_url}/openapi.json", "--checks", "all",
                 "--max-time", str(BUDGET_S), "--seed", str(seed),
                 "--no-color"],
                cwd=ROOT, capture_output=True, text=True, timeout=BUDGET_S + 120)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    print(f"\nschemathesis (seed {seed}; replay with SCHEMATHESIS_SEED={seed}):\n{summary}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "generated" in summary
