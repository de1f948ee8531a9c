"""E-mail through a real SMTP server: exactly one per order, and outages raise to be retried."""
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from contracts.messages import (
    OrderLine,
    SagaOrder,
    SendCancellationNotice,
    SendFailureNotice,
    StockReserved,
)
from devstack import postgres
from devstack.postgres import PostgresCluster
from devstack.smtp import read_mails
from runtime.db import make_engine
from runtime.migrations import migrate
from services.notify import handlers
from services.notify.mailer import SmtpMailer, SmtpUnavailable
from services.notify.models import MIGRATIONS

SENDER = "Orders <orders@saga.localhost>"


@pytest.fixture
def db(migrated):
    return migrated(MIGRATIONS).kw["bind"]


@pytest.fixture
def mailer(maildrop):
    return SmtpMailer("127.0.0.1", maildrop.port, timeout_s=5)


def order(order_id: str) -> SagaOrder:
    return SagaOrder(order_id=order_id, customer_email="ada@example.com", total_cents=2598,
                     currency="EUR", items=[OrderLine(sku="BOOK-1", quantity=2)])


def mails_for(maildrop, order_id: str):
    return [m for m in read_mails(maildrop.maildir) if order_id in m["Subject"]]


def test_a_confirmation_is_sent_once_with_the_order_id_in_its_subject(db, mailer, maildrop,
                                                                     db_url):
    order_id = f"conf-{abs(hash(db_url))}"
    reserved = StockReserved(order=order(order_id), authorization_id="a", reservation_id="r")
    first = handlers.send_confirmation(reserved, db, mailer, SENDER)
    again = handlers.send_confirmation(reserved, db, mailer, SENDER)
    assert first.succeeded and again == first
    [mail] = mails_for(maildrop, order_id)
    assert mail["To"] == "ada@example.com" and "confirmed" in mail["Subject"]
    assert "25.98 EUR" in mail.get_content()


def test_an_order_never_gets_a_second_kind_of_mail(db, mailer, maildrop, db_url):
    order_id = f"once-{abs(hash(db_url))}"
    handlers.send_confirmation(StockReserved(order=order(order_id), authorization_id="a",
                                             reservation_id="r"), db, mailer, SENDER)
    late = handlers.send_failure_notice(SendFailureNotice(order=order(order_id), reason="x"),
                                        db, mailer, SENDER)
    # told "confirmed" already: a failure, so that the saga flags the order for a person
    assert (late.succeeded, late.reason) == (False, "other_mail_sent")
    assert late.detail["already_sent"] == "confirmation"
    assert len(mails_for(maildrop, order_id)) == 1


def test_a_cancelled_order_gets_its_cancellation_once_after_its_confirmation(
        db, mailer, maildrop, db_url):
    order_id = f"cancel-{abs(hash(db_url))}"
    handlers.send_confirmation(StockReserved(order=order(order_id), authorization_id="a",
                                             reservation_id="r"), db, mailer, SENDER)
    notice = SendCancellationNotice(order=order(order_id), refunded=True)
    first = handlers.send_cancellation_notice(notice, db, mailer, SENDER)
    again = handlers.send_cancellation_notice(notice, db, mailer, SENDER)
    assert first.succeeded and again == first
    subjects = sorted(m["Subject"] for m in mails_for(maildrop, order_id))
    assert subjects == [f"Your order {order_id} has been cancelled",
                        f"Your order {order_id} is confirmed"]
    [cancelled] = [m for m in mails_for(maildrop, order_id) if "cancelled" in m["Subject"]]
    assert "nothing stays charged" in cancelled.get_content()


def test_a_confirmation_that_comes_after_the_cancellation_is_never_sent(
        db, mailer, maildrop, db_url):
    order_id = f"late-{abs(hash(db_url))}"
    notice = SendCancellationNotice(order=order(order_id), refunded=True)
    assert handlers.send_cancellation_notice(notice, db, mailer, SENDER).succeeded
    late = handlers.send_confirmation(StockReserved(order=order(order_id), authorization_id="a",
                                                    reservation_id="r"), db, mailer, SENDER)
    assert (late.succeeded, late.reason) == (False, "cancelled")
    assert [m["Subject"] for m in mails_for(maildrop, order_id)] == [
        f"Your order {order_id} has been cancelled"]


def test_a_cancellation_waits_while_the_confirmation_is_going_out(db, mailer, maildrop,
                                                                  db_url):
    order_id = f"wait-{abs(hash(db_url))}"
    confirmation = handlers.compose(order(order_id), "confirmation", SENDER)
    assert handlers.claim(db, order(order_id), "confirmation", confirmation)[:2] == (
        "confirmation", "sending")
    notice = SendCancellationNotice(order=order(order_id), refunded=True)
    with pytest.raises(handlers.ConfirmationSending):
        handlers.send_cancellation_notice(notice, db, mailer, SENDER)
    assert mails_for(maildrop, order_id) == []


def test_a_failure_notice_says_why(db, mailer, maildrop, db_url):
    order_id = f"fail-{abs(hash(db_url))}"
    notice = SendFailureNotice(order=order(order_id), reason="out_of_stock", refunded=True)
    assert handlers.send_failure_notice(notice, db, mailer, SENDER).succeeded
    [mail] = mails_for(maildrop, order_id)
    assert "could not be completed" in mail["Subject"]
    assert "out of stock" in mail.get_content()


def test_an_smtp_outage_raises_for_a_retry_and_records_nothing(db, free_port):
    down = SmtpMailer("127.0.0.1", free_port(), timeout_s=1)
    reserved = StockReserved(order=order("down-1"), authorization_id="a", reservation_id="r")
    with pytest.raises(SmtpUnavailable):
        handlers.send_confirmation(reserved, db, down, SENDER)


def test_two_deliveries_of_one_confirmation_at_once_send_one_mail(db, maildrop, mailer, db_url):
    # what a duplicate message does on any broker (on Redis the guard's lock also stops it,
    # when Redis answers; on RabbitMQ nothing else does)
    order_id = f"twice-{abs(hash(db_url))}"
    reserved = StockReserved(order=order(order_id), authorization_id="a", reservation_id="r")
    sending, both_in = threading.Event(), threading.Barrier(2, timeout=10)

    class Slow:
        def send(self, mail):
            sending.set()
            both_in.wait()  # the other delivery claims while this one is mid-send
            mailer.send(mail)

    class Other:
        def send(self, mail):
            raise AssertionError("the second delivery sent the mail too")

    first = threading.Thread(target=handlers.send_confirmation,
                             args=(reserved, db, Slow(), SENDER))
    first.start()
    assert sending.wait(10)
    with pytest.raises(handlers.MailBeingSent):
        handlers.send_confirmation(reserved, db, Other(), SENDER)
    both_in.wait()
    first.join(10)
    # its retry finds it sent, and sends nothing
    assert handlers.send_confirmation(reserved, db, Other(), SENDER).succeeded
    assert len(mails_for(maildrop, order_id)) == 1


def test_a_send_that_died_mid_way_goes_out_again_once_its_lease_ran_out(db, mailer, maildrop,
                                                                         db_url):
    order_id = f"died-{abs(hash(db_url))}"
    reserved = StockReserved(order=order(order_id), authorization_id="a", reservation_id="r")
    mail = handlers.compose(order(order_id), "confirmation", SENDER)
    assert handlers.claim(db, order(order_id), "confirmation", mail)[1] == "sending"
    with pytest.raises(handlers.MailBeingSent):  # its sender may still be at it
        handlers.send_confirmation(reserved, db, mailer, SENDER)
    with db.begin() as conn:  # the lease runs out: that sender is gone
        conn.execute(handlers._SET, {"id": order_id, "in_slot": "outcome",
                                     "sent_at": handlers._EXPIRED})
    assert handlers.send_confirmation(reserved, db, mailer, SENDER).succeeded
    assert len(mails_for(maildrop, order_id)) == 1


def test_a_delivery_whose_send_failed_gives_up_its_own_claim_only(db, mailer, maildrop, db_url):
    order_id = f"fence-{abs(hash(db_url))}"
    reserved = StockReserved(order=order(order_id), authorization_id="a", reservation_id="r")
    mail = handlers.compose(order(order_id), "confirmation", SENDER)
    first = handlers.claim(db, order(order_id), "confirmation", mail)
    with db.begin() as conn:  # the first delivery's lease ran out while its send hung
        conn.execute(handlers._SET, {"id": order_id, "in_slot": "outcome",
                                     "sent_at": handlers._EXPIRED})
    second = handlers.claim(db, order(order_id), "confirmation", mail)  # took over: sending
    assert second.status == "sending" and second.since != first.since
    handlers.release(db, order_id, "confirmation", first.since)  # the first one's send failed
    with pytest.raises(handlers.MailBeingSent):  # the second's claim still stands
        handlers.send_confirmation(reserved, db, mailer, SENDER)
    assert mails_for(maildrop, order_id) == []


def test_a_confirmation_and_a_failure_notice_racing_send_one_mail(db, mailer, maildrop,
                                                                   db_url):
    from concurrent.futures import ThreadPoolExecutor
    order_id = f"race-{abs(hash(db_url))}"
    confirm = StockReserved(order=order(order_id), authorization_id="a", reservation_id="r")
    notice = SendFailureNotice(order=order(order_id), reason="timed_out")
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda send: send(), [
            lambda: handlers.send_confirmation(confirm, db, mailer, SENDER),
            lambda: handlers.send_failure_notice(notice, db, mailer, SENDER)]))
    assert len(mails_for(maildrop, order_id)) == 1
    assert sum("already_sent" in o.detail for o in outcomes) == 1
    assert [o.succeeded for o in outcomes].count(False) == 1


def test_a_database_restart_right_after_sending_does_not_send_it_twice(mailer, maildrop):
    why = postgres.available()
    if why:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="saga-notify-pg-"))
    base.chmod(0o755)  # open to the postgres user the cluster runs as
    with PostgresCluster(base) as cluster:
        url = cluster.create_database("notify")
        migrate(url, MIGRATIONS)
        db = make_engine(url, timeout_s=2)
        reserved = StockReserved(order=order("restart-1"), authorization_id="a",
                                 reservation_id="r")

        class RestartAfterSending:
            """The real SMTP server takes the mail; then PostgreSQL stops for a second."""

            def send(self, mail):
                mailer.send(mail)
                cluster.stop("fast")
                restarts.append(threading.Timer(1.0, cluster.start))
                restarts[-1].start()

        restarts: list[threading.Timer] = []
        outcome = None
        for _delivery in range(3):  # the step's retries, as the worker would make them
            try:
                outcome = handlers.send_confirmation(reserved, db, RestartAfterSending(), SENDER)
                break
            except OperationalError:
                time.sleep(2)
        for restart in restarts:  # started again before the cluster is stopped for good
            restart.join()
        db.dispose()
    shutil.rmtree(base, ignore_errors=True)
    assert outcome is not None and outcome.succeeded
    assert len(mails_for(maildrop, "restart-1")) == 1
