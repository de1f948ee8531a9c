"""The bench's long-running children: their output kept off the terminal, and waiting until they
serve."""
import io
import time
from collections.abc import Sequence

from devstack.net import wait_ok
from devstack.supervisor import Supervisor


class NullOut(io.TextIOBase):
    """The supervisor's own lines (migrations, restarts) go to the log files, not the terminal."""

    def write(self, text: str) -> int:
        return len(text)


def wait_workers_ready(supervisor: Supervisor, names: Sequence[str], timeout: float = 60) -> None:
    """Celery prints `<node> ready.` once it consumes; /healthz alone does not say that."""
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting:
        waiting = [n for n in waiting if " ready." not in supervisor.recent_output(n, lines=200)]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {timeout:g} s: {waiting}\n"
                               + "\n".join(supervisor.recent_output(n) for n in waiting))
        time.sleep(0.1)


def wait_http(supervisor: Supervisor, url: str, timeout: float = 60) -> None:
    """Until GET url answers 200."""
    try:
        wait_ok(url, timeout, every=0.1)
    except TimeoutError as late:
        raise RuntimeError(f"{late}\n" + supervisor.recent_output()) from late
