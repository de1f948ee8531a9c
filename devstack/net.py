"""Tiny socket helpers shared by the embedded servers, the launcher and the tests."""
import socket


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
