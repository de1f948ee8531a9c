"""The short chaos runs: every kind of fault at least once, then every invariant checked; on one
Redis, on Redis behind Sentinel with its master killed mid-run, and on a RabbitMQ node of the
run's own, restarted mid-run."""
import json
import subprocess
import sys

import pytest

from devstack.rabbitmq import RabbitNode
from tests.support.paths import ROOT


def quick_chaos(var_dir, *args: str) -> dict:
    run = subprocess.run([sys.executable, "-m", "chaos", "--quick", "--var-dir", str(var_dir),
                          *args], cwd=ROOT, capture_output=True, text=True, timeout=380)
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((var_dir / "report.json").read_text())
    assert report["broken"] == []
    rows = {what: value for what, value, _ in report["rows"]}
    assert rows["orders"] == 80 and rows["confirmed"] + rows["failed"] == 80
    return rows


@pytest.mark.timeout(400)
def test_every_invariant_holds_through_a_short_chaos_run(tmp_path):
    rows = quick_chaos(tmp_path)
    assert rows["worker restarts"] >= 4  # the junk count is checked exactly in the report


@pytest.mark.timeout(400)
def test_every_invariant_holds_when_the_redis_master_fails_over_to_its_replica(tmp_path):
    # asynchronous replication may lose what the master had not passed on: the outbox and the
    # sweeper must make up for it, as the invariants check
    rows = quick_chaos(tmp_path, "--broker", "sentinel")
    assert rows["fault injected: failover"] == 1


@pytest.mark.timeout(400)
def test_every_invariant_holds_on_rabbitmq_through_a_restart_of_its_node(tmp_path):
    why = RabbitNode.unavailable()
    if why:
        pytest.skip(f"RabbitMQ: {why}")
    rows = quick_chaos(tmp_path, "--broker", "rabbitmq")
    assert rows["fault injected: rabbitmq_restart"] == 1
    assert rows["dead letters: junk"] == 8  # through RabbitMQ's dead-letter exchange
