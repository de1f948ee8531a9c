"""Notify's domain: one e-mail per order for its outcome (a confirmation or a failure notice),
and one more if it is cancelled."""
import itertools
import logging
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import NamedTuple, Protocol

from sqlalchemy import Connection, Engine, bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from contracts.messages import (
    MailKind,
    MailSent,
    SagaOrder,
    SendCancellationNotice,
    SendFailureNotice,
    StockReserved,
)
from contracts.names import Task
from runtime.db import database_trouble, utcnow
from runtime.inbox import once
from runtime.outcome import StepOutcome
from runtime.retries import RetryableError, backoff_s
from services.notify.mailer import MailRejected, compose
from services.notify.models import Inbox, Mail

INBOX = Inbox.__table__
log = logging.getLogger("saga.notify")

# Core statements, built once: these run for every order (see runtime/inbox.py)
MAILS = Mail.__table__
_LOCK = select(MAILS).where(MAILS.c.order_id == bindparam("id"),
                            MAILS.c.slot == bindparam("in_slot")).with_for_update()
_INSERT = insert(MAILS)
_SET = update(MAILS).where(MAILS.c.order_id == bindparam("id"),
                           MAILS.c.slot == bindparam("in_slot"))
SLOTS: dict[str, str] = {"confirmation": "outcome", "failure_notice": "outcome",
                         "cancellation": "cancellation"}


class Mailer(Protocol):
    def send(self, mail: EmailMessage) -> None: ...


def send_confirmation(msg: StockReserved, db: Engine, mailer: Mailer, sender: str) -> StepOutcome:
    mail = compose(msg.order, "confirmation", sender)
    return _send_once(msg.order, "confirmation", Task.SEND_CONFIRMATION, mail, db, mailer)


def send_failure_notice(msg: SendFailureNotice, db: Engine, mailer: Mailer,
                        sender: str) -> StepOutcome:
    mail = compose(msg.order, "failure_notice", sender, msg.reason, msg.refunded)
    return _send_once(msg.order, "failure_notice", Task.SEND_FAILURE_NOTICE, mail, db, mailer)


def send_cancellation_notice(msg: SendCancellationNotice, db: Engine, mailer: Mailer,
                             sender: str) -> StepOutcome:
    mail = compose(msg.order, "cancellation", sender, refunded=msg.refunded)
    return _send_once(msg.order, "cancellation", Task.SEND_CANCELLATION_NOTICE, mail, db, mailer)


class ConfirmationSending(RetryableError):
    """The order's confirmation is going out right now: its cancellation follows it."""


class MailBeingSent(RetryableError):
    """Another delivery of this very step is sending this mail right now (a duplicate message,
    or a redelivery racing the original): this one comes back later and finds it sent."""


# A claim `sending` younger than this is another delivery's, sending now; older, its sender
# died mid-send and the mail goes out again (at least once). Longer than a send and its mark
# (the SMTP timeout, 10 s for each exchange of a conversation, and MARK_SENT_PATIENCE_S, 15 s).
# On Redis the guard's lock also keeps two deliveries from running at once; this lease holds on
# every broker, and with Redis away. It compares the database's timestamps with this host's
# clock: hosts' clocks must agree to well within it.
SENDING_LEASE_S = 60.0
_EXPIRED = datetime(2000, 1, 1, tzinfo=UTC)


class Claim(NamedTuple):
    kind: str  # who holds the slot
    status: str  # sending | sent | rejected
    since: datetime | None = None  # when this delivery took it (`sending`, ours): its token


def claim(db: Engine, order: SagaOrder, kind: str, mail: EmailMessage) -> Claim:
    """The order's mail of `kind`'s slot, claimed for `kind` unless another kind holds it:
    (kind, status, since). The customer reads an order's mails in the order they are told: a
    confirmation is never sent once the cancellation is claimed (it answers as held by the
    cancellation), and a cancellation waits while the confirmation is being sent."""
    key = {"id": order.order_id, "in_slot": SLOTS[kind]}
    try:
        with db.begin() as conn:
            _serialize(conn, order.order_id)
            if kind == "confirmation":
                cancelled = conn.execute(_LOCK, {**key, "in_slot": "cancellation"}).first()
                if cancelled is not None:
                    return Claim(cancelled.kind, cancelled.status)
            elif kind == "cancellation":
                told = conn.execute(_LOCK, {**key, "in_slot": "outcome"}).first()
                if told is not None and told.kind == "confirmation" \
                        and told.status == "sending":
                    raise ConfirmationSending(f"the confirmation of {order.order_id} is going out")
            row = conn.execute(_LOCK, key).first()
            if row is not None and row.kind == kind and row.status == "sending":
                if utcnow() - _aware(row.sent_at) < timedelta(seconds=SENDING_LEASE_S):
                    raise MailBeingSent(f"the {kind} of {order.order_id} is being sent by "
                                        "another delivery")
                since = utcnow()
                conn.execute(_SET, {**key, "sent_at": since})  # its sender died: ours now
                return Claim(kind, "sending", since)
            if row is not None:
                return Claim(row.kind, row.status)
            since = utcnow()
            conn.execute(_INSERT, {"order_id": order.order_id, "slot": SLOTS[kind],
                                   "kind": kind, "status": "sending",
                                   "recipient": order.customer_email,
                                   "subject": str(mail["Subject"]),
                                   "message_id": str(mail["Message-ID"]), "sent_at": since})
            return Claim(kind, "sending", since)
    except IntegrityError:  # the other kind claimed it at the same instant
        with db.connect() as conn:
            row = conn.execute(_LOCK, key).one()
            return Claim(row.kind, row.status)


def _serialize(conn: Connection, order_id: str) -> None:
    """The claims of one order's mails, one at a time. SQLite runs one writer at a time anyway;
    on PostgreSQL two claims of different slots would each miss the other's uncommitted row."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:id))"), {"id": order_id})


# How long a sent mail waits for its database to say so: within the guard's lease
# (runtime.guard.LOCK_LEASE_S, 30 s, less the SMTP timeout), so that no duplicate delivery of
# the step can take over and send it again meanwhile.
MARK_SENT_PATIENCE_S = 15.0


def mark_sent(db: Engine, order_id: str, kind: str = "confirmation",
              patience_s: float = MARK_SENT_PATIENCE_S) -> None:
    """Say at once that the mail went out, waiting out a database that is away or restarting:
    the SMTP server has taken it, and a retry that found the claim still `sending` would send it
    a second time. Only a database away for longer than `patience_s` (or a crash right here)
    leaves that window open; the step's own record then retries as any step does."""
    deadline = time.monotonic() + patience_s
    for attempt in itertools.count():
        try:
            with db.begin() as conn:
                conn.execute(_SET, {"id": order_id, "in_slot": SLOTS[kind], "status": "sent",
                                    "sent_at": utcnow()})
            return
        except Exception as exc:
            left = deadline - time.monotonic()
            if not database_trouble(exc) or left <= 0:
                raise
            time.sleep(min(left, backoff_s(0.25, attempt)))


def release(db: Engine, order_id: str, kind: MailKind, since: datetime) -> None:
    """Our claim's lease given up, its mail not sent: only if it is still ours (taken at
    `since`), never another delivery's that took over meanwhile. Best effort: else it runs
    out."""
    try:
        with db.begin() as conn:
            conn.execute(_SET.where(MAILS.c.status == "sending", MAILS.c.sent_at == since),
                         {"id": order_id, "in_slot": SLOTS[kind], "sent_at": _EXPIRED})
    except Exception:
        log.warning("could not give up the claim of the %s of %s; it runs out in %.0f s",
                    kind, order_id, SENDING_LEASE_S)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _send_once(order: SagaOrder, kind: MailKind, step: str, mail: EmailMessage, db: Engine,
               mailer: Mailer) -> StepOutcome:
    def deliver() -> str:
        held = claim(db, order, kind, mail)
        if held.kind != kind:
            return f"already:{held.kind}"
        if held.status == "sending":  # ours; after a crash mid-send it goes out again
            assert held.since is not None
            try:
                mailer.send(mail)
            except MailRejected as exc:
                return f"rejected:{exc}"
            except Exception:
                # not sent: the retry need not wait for the lease to run out
                release(db, order.order_id, kind, held.since)
                raise
            mark_sent(db, order.order_id, kind)
        return "sent"

    def record(conn: Connection, result: str) -> StepOutcome:
        key = {"id": order.order_id, "in_slot": SLOTS[kind]}
        if result == "already:cancellation":
            # a confirmation that arrives once the order is cancelled (its reply was late):
            # never sent after the cancellation; the saga expects this refusal
            return StepOutcome.failed("cancelled", why="the order was cancelled")
        row = conn.execute(_LOCK, key).one()
        if result.startswith("already:"):
            # This order already has its one e-mail, of the other kind: a second is never sent,
            # and the customer was told the opposite of what the saga now says. A failure, so
            # that the saga asks a person instead of closing the order.
            return StepOutcome.failed("other_mail_sent", already_sent=row.kind,
                                      message_id=row.message_id)
        if result.startswith("rejected:"):
            conn.execute(_SET, {**key, "status": "rejected"})
            return StepOutcome.failed("mail_rejected", error=result.removeprefix("rejected:"))
        conn.execute(_SET, {**key, "status": "sent", "sent_at": utcnow()})
        output = MailSent(order_id=order.order_id, kind=kind, message_id=row.message_id)
        return StepOutcome.ok(output, to=row.recipient, subject=row.subject,
                              message_id=row.message_id)

    return once(db, INBOX, order.order_id, step, record, deliver)
