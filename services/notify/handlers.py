"""Notify's domain: exactly one e-mail per order, a confirmation or a failure notice."""
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import MailSent, SagaOrder, SendFailureNotice, StockReserved
from contracts.names import Task
from contracts.runtime.inbox import once
from contracts.runtime.step import StepOutcome
from contracts.runtime.store import utcnow
from services.notify.mailer import MailRejected, compose
from services.notify.models import Inbox, Mail


class Mailer(Protocol):
    def send(self, mail: EmailMessage) -> None: ...


def send_confirmation(msg: StockReserved, sessions: sessionmaker, mailer: Mailer,  # type: ignore[type-arg]
                      sender: str) -> StepOutcome:
    mail = compose(msg.order, "confirmation", sender)
    return _send_once(msg.order, "confirmation", Task.SEND_CONFIRMATION, mail, sessions, mailer)


def send_failure_notice(msg: SendFailureNotice, sessions: sessionmaker,  # type: ignore[type-arg]
                        mailer: Mailer, sender: str) -> StepOutcome:
    mail = compose(msg.order, "failure_notice", sender, msg.reason, msg.refunded)
    return _send_once(msg.order, "failure_notice", Task.SEND_FAILURE_NOTICE, mail, sessions, mailer)


def claim(sessions: sessionmaker, order: SagaOrder, kind: str,  # type: ignore[type-arg]
          mail: EmailMessage) -> tuple[str, str]:
    """The order's one mail, claimed for `kind` unless another kind holds it: (kind, status)."""
    try:
        with sessions.begin() as session:
            row = session.get(Mail, order.order_id, with_for_update=True)
            if row is None:
                row = Mail(order_id=order.order_id, kind=kind, status="sending",
                           recipient=order.customer_email, subject=str(mail["Subject"]),
                           message_id=str(mail["Message-ID"]))
                session.add(row)
            return row.kind, row.status
    except IntegrityError:  # the other kind claimed it at the same instant
        with sessions.begin() as session:
            row = session.get(Mail, order.order_id)
            assert row is not None
            return row.kind, row.status


def _send_once(order: SagaOrder, kind: str, step: str, mail: EmailMessage,
               sessions: sessionmaker, mailer: Mailer) -> StepOutcome:  # type: ignore[type-arg]
    def deliver() -> str:
        holder, status = claim(sessions, order, kind, mail)
        if holder != kind:
            return f"already:{holder}"
        if status == "sending":  # ours; after a crash mid-send it goes out again (at least once)
            try:
                mailer.send(mail)
            except MailRejected as exc:
                return f"rejected:{exc}"
        return "sent"

    def record(session: Session, result: str) -> StepOutcome:
        row = session.get(Mail, order.order_id)
        assert row is not None
        if result.startswith("already:"):
            # this order already has its one e-mail; a second kind is never sent
            return StepOutcome.ok(already_sent=row.kind, message_id=row.message_id)
        if result.startswith("rejected:"):
            row.status = "rejected"
            return StepOutcome.failed("mail_rejected", error=result.removeprefix("rejected:"))
        row.status, row.sent_at = "sent", utcnow()
        output = MailSent(order_id=order.order_id, kind=kind, message_id=row.message_id)  # type: ignore[arg-type]
        return StepOutcome.ok(output, to=row.recipient, subject=row.subject,
                              message_id=row.message_id)

    return once(sessions, Inbox, order.order_id, step, record, deliver)
