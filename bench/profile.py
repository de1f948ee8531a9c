"""`--py-spy`: sample every saga process while the burst runs, and say where their time goes.

py-spy is a dev dependency (requirements-dev.txt), found next to this Python or on PATH; it samples
only the thread holding the GIL (`--gil`), i.e. where each process spends its Python time, and
writes collapsed stacks (`<kind>.txt`, flamegraph.pl / speedscope read them)."""
import collections
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OURS = ("orchestrator/", "services/", "contracts/", "runtime/")
NOT_INTERESTING = ("__main__", "/cli.py")


def find(py_spy: str) -> str:
    # `make bench` runs the venv's python without the venv on PATH: look beside it first
    found = shutil.which(py_spy, path=str(Path(sys.executable).parent)) or shutil.which(py_spy)
    if found is None:
        raise SystemExit(f"bench: --py-spy {py_spy}: no such program (pip install py-spy)")
    return found


@contextmanager
def sampling(py_spy: str, pids: Mapping[str, int | None], out: Path,
             rate: int = 100) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in pids.items():
        if pid is None:
            continue
        spies.append(subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--gil", "--nonblocking", "--output", str(out / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        yield
    finally:
        for spy in spies:  # SIGINT: py-spy writes what it has and exits
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def summarize(out: Path, top: int = 8) -> dict[str, Any]:
    """Per process: its share of samples by library and by the innermost frames of our code."""
    summary = {}
    for path in sorted(out.glob("*.txt")):
        samples = _read(path)
        total = sum(samples.values())
        if not total:
            continue
        libraries: collections.Counter[str] = collections.Counter()
        ours: collections.Counter[str] = collections.Counter()
        for stack, count in samples.items():
            frames = stack.split(";")
            libraries[_library(frames[-1])] += count
            mine = [_function(f) for f in frames if _location(f).startswith(OURS)
                    and not any(n in f for n in NOT_INTERESTING)]
            ours[" > ".join(mine[-3:]) if mine else "(Celery, kombu, uvicorn: no frame of ours)"] \
                += count
        summary[path.stem] = {
            "samples": total,
            "by_library_pct": {k: round(100 * v / total, 1) for k, v in libraries.most_common(top)},
            "by_our_code_pct": {k: round(100 * v / total, 1) for k, v in ours.most_common(top)},
        }
    return summary


def _read(path: Path) -> collections.Counter[str]:
    samples: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[stack] += int(count)
    return samples


def _function(frame: str) -> str:
    return frame.partition(" (")[0]


def _location(frame: str) -> str:
    """py-spy names files relative to sys.path: `sqlalchemy/orm/session.py`,
    `orchestrator/api.py`."""
    location = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    match = re.search(r"(?:site|dist)-packages/(.+)", location)
    return match.group(1) if match else location


def _library(frame: str) -> str:
    """The top-level package (or module) a frame's code belongs to."""
    return _location(frame).lstrip("/").split("/", 1)[0].removesuffix(".py") or "?"
