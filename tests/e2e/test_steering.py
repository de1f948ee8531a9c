"""Steering orders through HTTP, with every part running for real, on SQLite and on PostgreSQL:
cancel at each point of the saga, fifty cancels racing fifty buyers of ten items, re-driving a
flagged order, and the dead letters seen from the orchestrator. Money is checked in the payment
gateway's ledger, stock in inventory's table, e-mails in the SMTP server's maildir."""
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from devstack.smtp import MailDropServer
from devstack.stack import Stack
from tests.support.orders import mails_for, order_body, step_names
from tests.support.redis_dbs import RedisDbs
from tests.support.replies import sender as make_sender
from tests.support.waiting import wait_for

SERVICES = ("orchestrator", "payment", "inventory", "notify")
CONFIRMED, CANCELLED = "is confirmed", "has been cancelled"


@dataclass
class System:
    stack: Stack
    api: httpx.Client
    mail: MailDropServer
    payment: Engine
    inventory: Engine

    @property
    def maildir(self) -> Path:
        return self.mail.maildir

    def place(self, **kw: Any) -> str:
        response = self.api.post("/orders", json=order_body(**kw))
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def order(self, order_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(f"/orders/{order_id}").json()
        return found

    def cancel(self, order_id: str, **body: Any) -> httpx.Response:
        return self.api.post(f"/orders/{order_id}/cancel", json=body or None)

    def wait_told(self, order_id: str, notice: str = "notify.order_cancelled",
                  timeout: float = 60) -> dict[str, Any]:
        """The order once its last notice has gone out and the saga has heard so."""
        def told() -> dict[str, Any] | None:
            order = self.order(order_id)
            return order if notice in step_names(order, "succeeded") else None
        result: dict[str, Any] = wait_for(told, timeout, what=f"{notice} for {order_id}")
        return result

    def charged(self, order_id: str) -> int:
        """What the gateway holds of this order's money: authorized less refunded."""
        with self.payment.connect() as conn:
            rows = conn.execute(text(
                "select kind, result, amount_cents from sandbox_gateway_calls "
                "where idempotency_key like :key"), {"key": f"{order_id}:%"}).all()
        held = {("authorize", "approved"): 1, ("refund", "refunded"): -1}
        return sum(held.get((kind, result), 0) * amount for kind, result, amount in rows)

    def reservation(self, order_id: str) -> str | None:
        with self.inventory.connect() as conn:
            return conn.execute(text("select status from reservations where order_id = :id"),
                                {"id": order_id}).scalar()

    def available(self, sku: str) -> int:
        with self.inventory.connect() as conn:
            return int(conn.execute(text("select available from stock where sku = :sku"),
                                    {"sku": sku}).scalar_one())

    def subjects(self, order_id: str) -> list[str]:
        """The order's e-mails by what their subject says, sorted."""
        return sorted(next(s for s in (CONFIRMED, CANCELLED, "could not be completed")
                           if s in str(m["Subject"])) for m in mails_for(self.maildir, order_id))

    @contextmanager
    def stopped(self, worker: str) -> Iterator[None]:
        """The worker frozen (SIGSTOP) for the block: what is sent to it waits in its queue."""
        pid = self.stack.supervisor.pid(worker)
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           redis_dbs: RedisDbs, mail: MailDropServer,
           free_port: Callable[[], int]) -> Iterator[System]:
    var = tmp_path_factory.mktemp(f"steering-{request.param}")
    if request.param == "postgresql":
        make = request.getfixturevalue("make_pg_database")
        urls = {name: make() for name in SERVICES}
    else:
        urls = {name: f"sqlite:///{var}/{name}.db" for name in SERVICES}
    with redis_dbs.lend() as redis_url:
        env = {
            "REDIS_URL": redis_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port),
            # a flaky gateway's retries come a second apart, long enough to cancel between them
            "PAYMENT_RETRY_BACKOFF_S": "1", "GATEWAY_TIMEOUT_MS": "20",
            # an e-mail that cannot go out reports itself stuck within a few seconds
            "NOTIFY_RETRY_BACKOFF_S": "0.02",
            **{f"{name.upper()}_DATABASE_URL": url for name, url in urls.items()},
        }
        with Stack(var, env=env, api_port=free_port()) as stack, \
                httpx.Client(base_url=stack.api_url, timeout=30) as api:
            stack.wait_ready(timeout=90)
            payment = create_engine(urls["payment"])
            inventory = create_engine(urls["inventory"])
            yield System(stack, api, mail, payment, inventory)
            payment.dispose()
            inventory.dispose()


def test_cancelled_before_payment_nothing_is_kept_and_one_cancellation_goes_out(system):
    with system.stopped("payment"):
        order_id = system.place()
        response = system.cancel(order_id, reason="changed my mind")
        assert response.status_code == 202, response.text
        assert response.json()["reason"] == "cancelled"
    order = system.wait_told(order_id)
    assert (order["status"], order["reason"], order["needs_attention"]) == (
        "cancelled", "cancelled", False)
    cancel = next(s for s in order["steps"] if s["name"] == "order.cancel")
    assert cancel["detail"] == {"reason": "changed my mind"}
    assert {"inventory.release", "payment.refund"} <= set(step_names(order, "succeeded"))
    assert system.charged(order_id) == 0
    assert system.reservation(order_id) != "reserved"
    time.sleep(0.5)  # a second e-mail would come right behind the first
    assert system.subjects(order_id) == [CANCELLED]
    # asked again: it is cancelled, and stays so
    again = system.cancel(order_id)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_cancelled_while_the_payment_retries_the_late_authorization_refuses(system):
    order_id = system.place(token="tok_gatewayFlaky")
    wait_for(lambda: "payment.authorize" in step_names(system.order(order_id), "retrying"),
             what="the first payment retry")
    assert system.cancel(order_id).status_code == 202
    order = system.wait_told(order_id)
    assert order["status"] == "cancelled" and not order["needs_attention"]
    # the retry that came after the cancel found the order void and refused to charge it
    refused = [s for s in order["steps"] if s["name"] == "payment.authorize"
               and s["status"] == "failed"]
    assert [s["reason"] for s in refused] in ([], ["cancelled"])
    assert "payment.authorize" not in step_names(order, "succeeded")
    assert system.charged(order_id) == 0 and system.reservation(order_id) != "reserved"
    time.sleep(0.5)
    assert system.subjects(order_id) == [CANCELLED]


def test_cancelled_after_the_pivot_the_confirmation_on_its_way_goes_out_first(system):
    with system.stopped("notify"):
        order_id = system.place()
        wait_for(lambda: system.order(order_id)["status"] == "confirmed", what="the pivot")
        assert system.cancel(order_id).status_code == 202
        # refunded and released while the e-mail worker is still stopped
        cancelled = wait_for(lambda: (o := system.order(order_id))["status"] == "cancelled" and o,
                             what="the compensations")
        assert cancelled["reason"] == "cancelled"
        assert system.charged(order_id) == 0 and system.reservation(order_id) == "released"
        assert mails_for(system.maildir, order_id) == []
    order = system.wait_told(order_id)
    assert not order["needs_attention"]
    names = step_names(order, "succeeded")
    assert names.index("notify.order_confirmed") < names.index("notify.order_cancelled")
    time.sleep(0.5)
    assert system.subjects(order_id) == [CANCELLED, CONFIRMED]


def test_cancelled_after_the_e_mail_it_is_refunded_released_and_told(system):
    order_id = system.place()
    system.wait_told(order_id, "notify.order_confirmed")
    before = system.charged(order_id)
    response = system.cancel(order_id)
    assert response.status_code == 202 and response.json()["status"] == "confirmed"
    order = system.wait_told(order_id)
    assert (order["status"], order["needs_attention"]) == ("cancelled", False)
    assert before > 0 and system.charged(order_id) == 0
    assert system.reservation(order_id) == "released"
    time.sleep(0.5)
    assert system.subjects(order_id) == [CANCELLED, CONFIRMED]


def test_a_failed_order_cannot_be_cancelled_and_an_unknown_one_is_a_404(system):
    order_id = system.place(token="tok_chargeDeclined")
    wait_for(lambda: system.order(order_id)["status"] == "failed", what="the decline")
    conflict = system.cancel(order_id)
    assert conflict.status_code == 409 and "failed" in conflict.json()["detail"]
    missing = system.cancel("00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and missing.json()["detail"]


def test_fifty_cancels_racing_fifty_buyers_of_ten_items_leave_money_and_stock_whole(system):
    stock = system.available("LIMITED-1")

    def buy_then_cancel(index: int) -> tuple[str, int]:
        order_id = system.place(sku="LIMITED-1", email=f"racer{index}@example.com")
        # each cancel lands somewhere else in its saga: before the payment, mid-way, after
        # the pivot, after the e-mail, or after the order failed for want of stock
        time.sleep(random.Random(index).uniform(0, 0.6))
        return order_id, system.cancel(order_id).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        raced = list(pool.map(buy_then_cancel, range(50)))
    answered = time.monotonic() - started
    codes = [code for _, code in raced]
    assert set(codes) <= {202, 409}
    orders = [system.order(order_id) for order_id, _ in raced]

    def all_told() -> list[dict[str, Any]] | None:
        now = [system.order(order_id) for order_id, _ in raced]
        done = all(("notify.order_cancelled" if o["status"] == "cancelled"
                    else "notify.order_failed") in step_names(o, "succeeded") for o in now)
        return now if done else None
    orders = wait_for(all_told, 180, 0.5, what="every racing order to end and be told")
    settled = time.monotonic() - started
    by_status = {s: sum(o["status"] == s for o in orders) for s in ("cancelled", "failed")}
    assert sum(by_status.values()) == 50, by_status
    # a 409 only for an order that was already failing (out of stock) when its cancel came
    for (order_id, code), order in zip(raced, orders, strict=True):
        assert (code == 409) == (order["status"] == "failed"), (order_id, code, order["status"])
        assert order["status"] != "failed" or order["reason"] == "out_of_stock"
        assert not order["needs_attention"], order_id
    # nothing kept: no money, all ten items back on the shelf
    assert sum(system.charged(order_id) for order_id, _ in raced) == 0
    assert system.available("LIMITED-1") == stock
    # one notice per terminal state: a cancelled order that got as far as its confirmation
    # has that e-mail too, and its cancellation after it
    for order in orders:
        subjects = system.subjects(order["id"])
        if order["status"] == "failed":
            assert subjects == ["could not be completed"], order["id"]
        elif "notify.order_confirmed" in step_names(order, "succeeded"):
            assert subjects == [CANCELLED, CONFIRMED], order["id"]
        else:
            assert subjects == [CANCELLED], order["id"]
    confirmed_first = sum("notify.order_confirmed" in step_names(o, "succeeded") for o in orders)
    print(f"\ncancel race ({system.stack.env['ORCHESTRATOR_DATABASE_URL'].split(':')[0]}): "
          f"{by_status} (202: {codes.count(202)}, 409: {codes.count(409)}), "
          f"{confirmed_first} confirmed and mailed before their cancel; "
          f"answered in {answered:.1f}s, all told in {settled:.1f}s")


def test_a_stuck_e_mail_flags_the_order_and_a_re_drive_clears_it_once_the_mail_goes_out(system):
    system.mail.stop()
    try:
        order_id = system.place()
        flagged = wait_for(lambda: (o := system.order(order_id))["needs_attention"] and o,
                           what="the stuck e-mail to flag the order")
        assert flagged["status"] == "confirmed"
        listed = system.api.get("/orders", params={"needs_attention": "true"}).json()
        assert order_id in [o["id"] for o in listed["orders"]]
    finally:
        system.mail.start()
    response = system.api.post(f"/orders/{order_id}/retry")
    assert response.status_code == 202, response.text
    order = system.wait_told(order_id, "notify.order_confirmed")
    wait_for(lambda: not system.order(order_id)["needs_attention"], what="the flag to clear")
    assert "order.retry" in step_names(system.order(order_id), "requested")
    time.sleep(0.5)
    assert system.subjects(order_id) == [CONFIRMED]
    assert order["status"] == "confirmed"
    # it needs nothing now
    again = system.api.post(f"/orders/{order_id}/retry")
    assert again.status_code == 409 and again.json()["detail"]


def test_a_dead_letter_about_an_order_is_listed_flags_it_and_a_re_drive_answers_it(system):
    order_id = system.place()
    system.wait_told(order_id, "notify.order_confirmed")
    make_sender(system.stack.env["REDIS_URL"]).send_task(
        "inventory.reserve", args=({"order": {"order_id": order_id}},))

    def listed() -> list[dict[str, Any]]:
        page = system.api.get("/dead-letters", params={"order_id": order_id}).json()
        return list(page["dead_letters"])
    [letter] = wait_for(listed, what="the dead letter's report")
    assert (letter["service"], letter["task"]) == ("inventory", "inventory.reserve")
    assert "validation error" in letter["error"]
    order = wait_for(lambda: (o := system.order(order_id))["needs_attention"] and o,
                     what="the order to be flagged")
    assert "inventory.reserve" in step_names(order, "dead_lettered")
    # the order itself waits for nothing: a re-drive answers the flag at once
    response = system.api.post(f"/orders/{order_id}/retry")
    assert response.status_code == 202 and not response.json()["needs_attention"]
    assert system.order(order_id)["status"] == "confirmed"
