"""An SMTP server for development that delivers every message as one `.eml` file in a directory.

Open a file with any mail client, or read them all with `read_mails()`; nothing leaves the machine.
"""
import email
import email.policy
import logging
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from devstack.net import free_port

log = logging.getLogger(__name__)


class MailDropServer:
    """SMTP on host:port; stop() then start() listens on the same port again (an outage, then
    recovery)."""

    def __init__(self, maildir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.maildir = Path(maildir).resolve()
        self.host = host
        self._port = port
        self._controller: Controller | None = None
        self._last_stamp = 0
        self._stamp_lock = threading.Lock()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("MailDropServer has no port until start()")
        return self._port

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> "MailDropServer":
        if self._controller is not None:
            return self
        (self.maildir / "tmp").mkdir(parents=True, exist_ok=True)
        if not self._port:
            # aiosmtpd checks readiness by connecting to its configured port, so it cannot be
            # given 0; pick the port here and keep it for every later restart.
            self._port = free_port(self.host)
        # A Controller closes its event loop on stop, so each start needs a new one.
        controller = Controller(_DropHandler(self), hostname=self.host, port=self._port)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def deliver(self, raw: bytes) -> Path:
        """Write one message; a reader sees either no file or the whole file, never a part."""
        name = f"{self._next_stamp():020d}-{uuid.uuid4().hex}.eml"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(raw)
        # rename within one filesystem is atomic; tmp/ is outside the *.eml glob readers use
        return tmp.replace(self.maildir / name)

    def _next_stamp(self) -> int:
        # Wall-clock nanoseconds, forced to increase so names sort in arrival order even when
        # two mails land within the clock's resolution or the clock steps back.
        with self._stamp_lock:
            self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
            return self._last_stamp

    def __enter__(self) -> "MailDropServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _DropHandler:
    def __init__(self, drop: MailDropServer) -> None:
        self._drop = drop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        try:
            path = self._drop.deliver(raw if isinstance(raw, bytes) else raw.encode())
        except OSError:
            log.exception("could not store a message in %s", self._drop.maildir)
            # 4xx: a transient failure, so a well-behaved sender tries again later
            return "451 Requested action aborted: could not store the message"
        log.debug("stored %s for %s", path.name, envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def read_mails(maildir: Path) -> list[EmailMessage]:
    """Every message in maildir, oldest first, parsed with the modern `email.policy.default`."""
    paths = sorted(Path(maildir).glob("*.eml"))
    return [_parse(path.read_bytes()) for path in paths]


def _parse(raw: bytes) -> EmailMessage:
    # On the wire (and on disk) lines end in CRLF; parsed as is, get_content() would return
    # "\r\n" line ends. Bodies are 7/8-bit text or base64 on the wire, so this loses nothing.
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)  # policy.default always builds EmailMessage
    return message

