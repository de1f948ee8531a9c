"""`make bench` works: a quick run writes its figures and its plot, and leaves nothing running,
whether it finishes or is stopped with Ctrl-C. No figure is asserted: those are for real runs."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from devstack.stack import REPO_ROOT

pytestmark = pytest.mark.timeout(300)

REQUIRED = ["throughput_ratio", "bare.chains_per_s", "saga.orders_per_s",
            "bare.latency_ms.p50", "bare.latency_ms.p95", "bare.latency_ms.p99",
            "saga.latency_ms.p50", "saga.latency_ms.p95", "saga.latency_ms.p99",
            "saga.latency_under_load_ms.p99", "saga.post_under_load_ms.p99",
            "saga.cpu_ms_per_order.total", "bare.cpu_ms_per_chain.total",
            "latency_ratio.p50", "scaling.payment", "memory.api_series", "machine.cpu_count",
            "settings.worker_concurrency",
            # the hand-rolled chain, measured like the saga, and the saga against it
            "handrolled.orders_per_s", "handrolled.cpu_ms_per_order.total",
            "handrolled.latency_ms.p50", "handrolled.latency_ms.p95", "handrolled.latency_ms.p99",
            "handrolled.email_latency_ms.p50", "saga.email_latency_ms.p50",
            "ratios.throughput_vs_handrolled", "ratios.cpu_vs_handrolled",
            "ratios.p50_vs_handrolled"]


def dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        assert isinstance(data, dict) and part in data, f"latest.json has no {path}"
        data = data[part]
    return data


def bench(out: Path, mark: str) -> subprocess.Popen[str]:
    # The mark is inherited by every process the bench starts, so we can look for leftovers.
    env = {**os.environ, "BENCH_SMOKE_MARK": mark}
    return subprocess.Popen([sys.executable, "-m", "bench", "--quick", "--out", str(out)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def leftovers(mark: str) -> list[str]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.environ().get("BENCH_SMOKE_MARK") == mark \
                    and process.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid}: {' '.join(process.info['cmdline'] or [])}")
        except (psutil.Error, OSError):
            continue
    return found


def test_a_quick_bench_writes_every_figure_and_the_plot(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    proc = bench(tmp_path / "bench", mark)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-4000:]

    result = json.loads((tmp_path / "bench" / "latest.json").read_text())
    for key in REQUIRED:
        dig(result, key)
    for key in ("throughput_ratio", "bare.chains_per_s", "saga.orders_per_s",
                "saga.latency_ms.p50", "bare.latency_ms.p99", "handrolled.orders_per_s",
                "handrolled.latency_ms.p50", "handrolled.cpu_ms_per_order.total",
                "ratios.throughput_vs_handrolled"):
        assert dig(result, key) > 0, key
    # its three workers and its API are measured, under the saga's names
    assert {"api", "payment", "inventory", "notify", "redis"} \
        <= set(result["handrolled"]["cpu_ms_per_order"])
    before, after = result["bare"]["chains_per_s_runs"]  # the baseline brackets the saga
    assert before > 0 and after > 0
    assert result["bare"]["chains_per_s"] == round((before + after) / 2, 1)
    assert set(result["scaling"]["payment"]) == {"1", "2"}  # workers -> orders/s
    assert all(rate > 0 for rate in result["scaling"]["payment"].values())
    assert (tmp_path / "bench" / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "saga ÷ bare" in output and "saga ÷ hand-rolled" in output and "wrote " in output
    assert leftovers(mark) == []


def test_ctrl_c_stops_everything_the_bench_started(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    proc = bench(tmp_path / "bench", mark)
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:  # interrupt it while the saga's stack is running
            lines.append(line)
            if "unloaded:" in line:
                break
        assert leftovers(mark), "".join(lines)  # it did have children running
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    deadline = time.monotonic() + 5
    while leftovers(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(mark) == []
