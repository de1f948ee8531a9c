"""Notify's domain: exactly one e-mail per order, a confirmation or a failure notice."""
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import MailSent, SagaOrder, SendFailureNotice, StockReserved
from contracts.names import Task
from contracts.runtime.inbox import once
from contracts.runtime.step import StepOutcome
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


def _send_once(order: SagaOrder, kind: str, step: str, mail: EmailMessage,
               sessions: sessionmaker, mailer: Mailer) -> StepOutcome:  # type: ignore[type-arg]
    def deliver() -> Mail | str:
        with sessions.begin() as session:
            earlier = session.get(Mail, order.order_id)
            if earlier is not None:
                session.expunge(earlier)
                return earlier
        try:
            mailer.send(mail)
        except MailRejected as exc:
            return str(exc)
        return Mail(order_id=order.order_id, kind=kind, recipient=order.customer_email,
                    subject=str(mail["Subject"]), message_id=str(mail["Message-ID"]))

    def record(session: Session, sent: Mail | str) -> StepOutcome:
        if isinstance(sent, str):
            return StepOutcome.failed("mail_rejected", error=sent)
        if sent.kind != kind:
            # this order already has its one e-mail; a second kind is never sent
            return StepOutcome.ok(already_sent=sent.kind, message_id=sent.message_id)
        if session.get(Mail, order.order_id) is None:
            session.add(sent)
        output = MailSent(order_id=order.order_id, kind=kind, message_id=sent.message_id)  # type: ignore[arg-type]
        return StepOutcome.ok(output, to=sent.recipient, subject=sent.subject,
                              message_id=sent.message_id)

    return once(sessions, Inbox, order.order_id, step, record, deliver)
