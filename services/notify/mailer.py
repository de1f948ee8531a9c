"""Composing and sending the e-mail. SMTP trouble that may pass is retried by the step."""
import email.policy
import smtplib
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from contracts.messages import SagaOrder
from runtime.retries import RetryableError

templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        undefined=StrictUndefined, keep_trailing_newline=True)

SUBJECTS = {
    "confirmation": "Your order {order_id} is confirmed",
    "failure_notice": "Your order {order_id} could not be completed",
    "cancellation": "Your order {order_id} has been cancelled",
}
WHY = {
    "payment_declined": "your card was declined",
    "payment_unavailable": "we could not reach the payment provider",
    "out_of_stock": "an item is out of stock",
}


class SmtpUnavailable(RetryableError):
    """The server is away or answered 4xx: the mail may go out on a later try."""


class MailRejected(Exception):
    """The server refused the message for good (a 5xx reply): retrying cannot help."""


@cache
def _header(name: str, value: str) -> Any:
    """A header parsed once: email's header parsing costs more than the rest of a mail."""
    return email.policy.default.header_factory(name, value)


def _set_body(mail: EmailMessage, text: str) -> None:
    # What set_content() decides for ASCII text with lines of at most 78 characters (7bit),
    # without deciding it again for every mail; any other text goes through set_content().
    # (bytes.splitlines, like set_content: str.splitlines also breaks at \x0b, \x1c and more)
    lines = text.encode("utf-8").splitlines()
    limit = mail.policy.max_line_length
    if text.isascii() and (limit is None or all(len(line) <= limit for line in lines)):
        for name, value in (("Content-Type", 'text/plain; charset="utf-8"'),
                            ("Content-Transfer-Encoding", "7bit"), ("MIME-Version", "1.0")):
            mail[name] = _header(name, value)
        mail.set_payload(b"\n".join(lines).decode("ascii") + "\n")
    else:
        mail.set_content(text)


def compose(order: SagaOrder, kind: str, sender: str, reason: str | None = None,
            refunded: bool = False) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = _header("From", sender)
    mail["To"] = order.customer_email
    mail["Subject"] = SUBJECTS[kind].format(order_id=order.order_id)
    mail["Date"] = formatdate(localtime=False)
    # the same Message-ID on a resend lets a receiving server drop the duplicate
    mail["Message-ID"] = f"<{order.order_id}.{kind}@saga.localhost>"
    why = WHY.get(reason or "", (reason or "").replace("_", " "))
    _set_body(mail, templates.get_template(f"{kind}.txt").render(
        order=order, why=why, refunded=refunded))
    return mail


def permanent(exc: smtplib.SMTPException) -> bool:
    """True when sending this message again cannot succeed. The reply code says so, not the
    exception's type: 5xx is permanent, 4xx (greylisting, a full mailbox) is worth another try."""
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return True  # e.g. a non-ASCII address and no SMTPUTF8: the server refuses it every time
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        # recipient -> (code, message); one 4xx among them may yet be delivered
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(code >= 500 for code in codes)
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500


class SmtpMailer:
    """Sends over one SMTP connection per thread, kept open between mails: a new connection
    (TCP, greeting, EHLO) for every mail costs the worker and the server more than the mail
    itself. A kept connection may have been closed by the server in the meantime (idle timeout,
    restart), so it is checked with a NOOP first and replaced if that fails; the mail itself is
    sent once, and a failure while sending it counts. One idle longer than `idle_s` is dropped
    unchecked."""

    def __init__(self, host: str, port: int, timeout_s: float, idle_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s, self.idle_s = host, port, timeout_s, idle_s
        self._local = threading.local()

    def send(self, mail: EmailMessage) -> None:
        try:
            smtp = self._kept() or smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            try:
                smtp.send_message(mail)
            except BaseException:
                smtp.close()  # whatever state it is in after a failure is not worth keeping
                raise
            self._local.smtp, self._local.used = smtp, time.monotonic()
        except smtplib.SMTPException as exc:  # before OSError: SMTPException is one
            if permanent(exc):
                raise MailRejected(f"SMTP {self.host}:{self.port} refused it: {exc}") from exc
            raise SmtpUnavailable(f"SMTP {self.host}:{self.port}: {exc}") from exc
        except OSError as exc:  # refused, reset, timed out: the server may be back later
            raise SmtpUnavailable(f"SMTP {self.host}:{self.port}: {exc}") from exc

    def _kept(self) -> smtplib.SMTP | None:
        """This thread's kept connection, if it is recent and still answers."""
        kept: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        used: float = getattr(self._local, "used", 0.0)
        self._local.smtp = None
        if kept is None:
            return None
        if time.monotonic() - used <= self.idle_s:
            try:
                if kept.noop()[0] == 250:
                    return kept
            except (smtplib.SMTPException, OSError):
                pass  # closed by the server meanwhile: says nothing about the next mail
        kept.close()
        return None
