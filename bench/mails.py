"""When each order's confirmation reached the SMTP server, the same way for every contender.

The embedded server (devstack/smtp.py, MailDropServer, in the bench's own process) names every
message it stores after its arrival: wall-clock nanoseconds, then a uuid. The order is in the
Message-ID (`<ORDER_ID.confirmation@saga.localhost>`), which the saga and the plain contenders
set alike; so POST → e-mail sent is read off the maildir, whoever sent the mail.
"""
import re
from pathlib import Path

_MESSAGE_ID = re.compile(rb"^Message-ID: <([^.>]+)\.confirmation@", re.IGNORECASE | re.MULTILINE)


def sent_at(maildir: Path, since: float = 0.0) -> dict[str, float]:
    """Order id -> when (time.time()) its confirmation arrived; only mails from `since` on."""
    found: dict[str, float] = {}
    floor = int(since * 1e9)
    for path in maildir.glob("*.eml"):
        stamp = int(path.name.split("-", 1)[0])
        if stamp < floor:
            continue
        with path.open("rb") as mail:
            head = mail.read(4096)  # the headers: the body follows them
        match = _MESSAGE_ID.search(head)
        if match is not None:
            found[match.group(1).decode()] = stamp / 1e9
    return found
