"""Tiny socket helpers shared by the embedded servers, the launcher and the tests."""
import socket
import time

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now.

    The kernel picks it (bind to 0); there is a small window before the caller binds it, which is
    acceptable on a developer machine and keeps the servers' own code simple.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True when we could listen on host:port (used to fail fast instead of a crash-looping API)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return True  # an unresolvable host is the server's error to report, not ours
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option uvicorn/asyncio set, so a port in TIME_WAIT does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
        return True


def wait_ok(url: str, timeout: float, every: float = 0.25) -> None:
    """Until GET url answers 200; TimeoutError saying the last answer after `timeout` s.
    trust_env=False: a developer's HTTP(S)_PROXY must not intercept a loopback request."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(every)
    raise TimeoutError(f"{url} not ready after {timeout:g} s (last: {last})")
