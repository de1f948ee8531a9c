"""SmtpMailer against real SMTP servers: the reply code decides between "retry" (4xx, the
connection) and "rejected for good" (5xx)."""
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from contracts.messages import OrderLine, SagaOrder
from devstack.net import free_port
from services.notify.mailer import MailRejected, SmtpMailer, SmtpUnavailable, compose

CUSTOMER = "ada@example.com"


class Answers:
    """An aiosmtpd handler that accepts everything except what `replies` says: "MAIL" and
    "DATA" map to a reply, "RCPT" to a reply for every recipient or one per address."""

    def __init__(self) -> None:
        self.replies: dict[str, Any] = {}
        self.delivered: list[Any] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if "MAIL" in self.replies:
            return self.replies["MAIL"]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.replies.get("RCPT", "250 OK")
        if isinstance(reply, dict):
            reply = reply.get(address, "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        if "DATA" in self.replies:
            return self.replies["DATA"]
        self.delivered.append(envelope)
        return "250 Message accepted"


@contextmanager
def smtp_server(**smtp_parameters: Any) -> Iterator[tuple[Answers, int]]:
    answers, port = Answers(), free_port()
    controller = Controller(answers, hostname="127.0.0.1", port=port, **smtp_parameters)
    controller.start()
    try:
        yield answers, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[Answers, int]]:
    with smtp_server(enable_SMTPUTF8=False) as server:  # a Controller enables it by default
        yield server


@pytest.fixture
def server(_server: tuple[Answers, int]) -> tuple[Answers, int]:
    answers, port = _server
    answers.replies.clear()
    answers.delivered.clear()
    return answers, port


@contextmanager
def not_smtp(greeting: bytes | None) -> Iterator[int]:
    """A TCP server that is no proper SMTP server: to each connection it sends `greeting` and
    waits for the client to leave; b"" hangs up at once, None never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop, connections = threading.Event(), []

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            if greeting == b"":
                connection.close()
                continue
            if greeting:
                connection.sendall(greeting)
            connections.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in connections:
            connection.close()
        listener.close()


def mail(to: str = CUSTOMER) -> Any:
    order = SagaOrder(order_id="order-1", customer_email=CUSTOMER, total_cents=1299,
                      currency="EUR", items=[OrderLine(sku="BOOK-1", quantity=1)])
    message = compose(order, "confirmation", "Orders <orders@saga.localhost>")
    message.replace_header("To", to)
    return message


def send(port: int, message: Any = None, timeout_s: float = 5) -> None:
    SmtpMailer("127.0.0.1", port, timeout_s).send(message or mail())


def test_an_accepted_mail_is_delivered(server):
    answers, port = server
    send(port)
    [envelope] = answers.delivered
    assert envelope.rcpt_tos == [CUSTOMER] and b"order-1" in envelope.content


@pytest.mark.parametrize("command,reply", [
    ("RCPT", "450 4.2.0 greylisted, try later"),
    ("RCPT", "451 4.3.0 local error"),
    ("RCPT", "452 4.2.2 mailbox full"),
    ("RCPT", "421 4.3.2 shutting down"),
    ("MAIL", "451 4.7.1 sender greylisted"),
    ("DATA", "450 4.7.1 try later"),
    ("DATA", "452 4.3.1 insufficient storage"),
])
def test_a_4xx_reply_is_worth_another_try(server, command, reply):
    answers, port = server
    answers.replies[command] = reply
    with pytest.raises(SmtpUnavailable, match=reply.split()[0]):
        send(port)
    assert not answers.delivered


@pytest.mark.parametrize("command,reply", [
    ("RCPT", "550 5.1.1 no such user"),
    ("RCPT", "553 5.1.3 mailbox name not allowed"),
    ("MAIL", "550 5.7.1 sender refused"),
    ("DATA", "554 5.7.1 rejected"),
    ("DATA", "552 5.3.4 message too big"),
])
def test_a_5xx_reply_is_a_rejection_for_good(server, command, reply):
    answers, port = server
    answers.replies[command] = reply
    with pytest.raises(MailRejected, match=reply.split()[0]):
        send(port)
    assert not answers.delivered


def test_recipients_refused_with_one_4xx_is_worth_another_try(server):
    answers, port = server
    answers.replies["RCPT"] = {"ada@example.com": "550 no such user",
                               "bob@example.com": "452 mailbox full"}
    with pytest.raises(SmtpUnavailable):
        send(port, mail("ada@example.com, bob@example.com"))


def test_recipients_all_refused_with_5xx_is_a_rejection(server):
    answers, port = server
    answers.replies["RCPT"] = "550 no such user"
    with pytest.raises(MailRejected):
        send(port, mail("ada@example.com, bob@example.com"))


def test_a_non_ascii_address_to_a_server_without_smtputf8_is_a_rejection(server):
    answers, port = server
    with pytest.raises(MailRejected):
        send(port, mail("jürgen@example.com"))
    assert not answers.delivered
    with smtp_server(enable_SMTPUTF8=True) as (utf8_answers, utf8_port):
        send(utf8_port, mail("jürgen@example.com"))  # the same mail, to a server that can
    assert utf8_answers.delivered[0].rcpt_tos == ["jürgen@example.com"]


def test_a_closed_port_is_an_outage():
    with pytest.raises(SmtpUnavailable):
        send(free_port())


def test_a_server_that_hangs_up_is_an_outage():
    with not_smtp(b"") as port, pytest.raises(SmtpUnavailable):
        send(port)


def test_a_server_that_never_answers_is_an_outage():
    with not_smtp(None) as port, pytest.raises(SmtpUnavailable):
        send(port, timeout_s=0.3)


def test_a_4xx_greeting_is_an_outage():
    with (not_smtp(b"421 4.3.2 too busy, come back later\r\n") as port,
          pytest.raises(SmtpUnavailable, match="421")):
        send(port)


def test_a_5xx_greeting_is_a_rejection():
    # 554 instead of 220: "no SMTP service here" (RFC 5321 3.1); a reply, and a permanent one
    with (not_smtp(b"554 5.7.1 no service for you\r\n") as port,
          pytest.raises(MailRejected, match="554")):
        send(port)


class Sessions(Answers):
    """Answers that also note which connection (the client's address) each mail came on."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[Any] = []

    async def handle_DATA(self, server, session, envelope):
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def session_server(port: int) -> Iterator[Sessions]:
    answers = Sessions()
    controller = Controller(answers, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield answers
    finally:
        controller.stop()


def test_mails_from_one_thread_share_one_connection():
    port = free_port()
    mailer = SmtpMailer("127.0.0.1", port, timeout_s=5)
    with session_server(port) as answers:
        for _ in range(3):
            mailer.send(mail())
    assert len(answers.delivered) == 3
    assert len(set(answers.peers)) == 1


def test_a_connection_the_server_closed_meanwhile_is_replaced_and_the_mail_goes_once():
    port = free_port()
    mailer = SmtpMailer("127.0.0.1", port, timeout_s=5)
    with session_server(port) as before:
        mailer.send(mail())
    with session_server(port) as after:  # a restart: the kept connection is dead
        mailer.send(mail())
    assert len(before.delivered) == 1 and len(after.delivered) == 1


def test_a_connection_idle_too_long_is_not_reused():
    port = free_port()
    mailer = SmtpMailer("127.0.0.1", port, timeout_s=5, idle_s=0)
    with session_server(port) as answers:
        mailer.send(mail())
        mailer.send(mail())
    assert len(answers.delivered) == 2 and len(set(answers.peers)) == 2


def test_after_a_refused_mail_the_next_one_is_delivered(server):
    answers, port = server
    mailer = SmtpMailer("127.0.0.1", port, timeout_s=5)
    answers.replies["DATA"] = "450 4.7.1 try later"
    with pytest.raises(SmtpUnavailable):
        mailer.send(mail())
    answers.replies.clear()
    mailer.send(mail())
    assert len(answers.delivered) == 1


def test_an_outage_on_a_kept_connection_is_still_an_outage():
    port = free_port()
    mailer = SmtpMailer("127.0.0.1", port, timeout_s=1)
    with session_server(port):
        mailer.send(mail())
    with pytest.raises(SmtpUnavailable):  # the server is gone, not just the connection
        mailer.send(mail())



@pytest.mark.parametrize("kind,reason", [("confirmation", None),
                                         ("failure_notice", "out_of_stock"),
                                         ("failure_notice", "délai_dépassé"),  # not ASCII
                                         ("failure_notice", "x" * 100)])  # a long line
def test_a_composed_mail_reads_back_as_the_template_wrote_it(kind, reason):
    # plain short-lined ASCII takes a shortcut past set_content(); a reader sees no difference
    import email
    import email.policy
    import uuid
    order = SagaOrder(order_id=str(uuid.uuid4()), customer_email=CUSTOMER, total_cents=1299,
                      currency="EUR", items=[OrderLine(sku="BOOK-1", quantity=2)])
    composed = compose(order, kind, "Orders <orders@saga.localhost>", reason)
    parsed = email.message_from_bytes(composed.as_bytes(), policy=email.policy.default)
    assert parsed["From"].addresses[0].addr_spec == "orders@saga.localhost"
    assert parsed["To"].addresses[0].addr_spec == CUSTOMER
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "text/plain"
    text = parsed.get_content()
    assert order.order_id in text and "2 x BOOK-1" in text and text.endswith("\n")
    if reason:
        assert reason.replace("_", " ") in text or "out of stock" in text


def test_a_mail_refused_on_a_kept_connection_is_not_sent_again_at_once(server):
    answers, port = server
    mailer = SmtpMailer("127.0.0.1", port, timeout_s=5)
    mailer.send(mail())
    answers.replies["DATA"] = "451 4.3.0 try later"
    with pytest.raises(SmtpUnavailable):
        mailer.send(mail())
    assert len(answers.delivered) == 1  # the step's retry sends it later, not the mailer now
