"""The bench's long-running children: their output kept off the terminal, and waiting until they
serve."""
import io
import time
from collections.abc import Sequence

import httpx

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
    """Until GET url answers 200 (trust_env=False: no developer's proxy for a loopback URL)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:g} s ({last})\n"
                       + supervisor.recent_output())
