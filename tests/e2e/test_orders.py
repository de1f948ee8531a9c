"""What a customer and an operator see, through HTTP, with every part running for real."""
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from runtime.broker import Broker
from tests.support.brokers import on_each_broker_kind
from tests.support.orders import mails_for, order_body, step_names, wait_mail, wait_terminal
from tests.support.replies import sender as make_sender
from tests.support.waiting import wait_for


def place(api: httpx.Client, **kw) -> str:
    response = api.post("/orders", json=order_body(**kw))
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/orders/{response.json()['id']}"
    assert response.json()["status"] == "pending"
    return response.json()["id"]


def test_health(api):
    assert api.get("/healthz").status_code == 200


@on_each_broker_kind
def test_an_order_is_paid_reserved_and_confirmed_by_mail(api, mail):
    order_id = place(api, sku="BOOK-1", quantity=2)
    order = wait_terminal(api, order_id)
    assert (order["status"], order["reason"], order["total_cents"]) == ("confirmed", None, 2598)
    assert step_names(order, "succeeded")[:2] == ["payment.authorize", "inventory.reserve"]
    message = wait_mail(mail.maildir, order_id)
    assert message["To"] == "ada@example.com" and "confirmed" in message["Subject"]
    order = wait_for(lambda: "notify.order_confirmed" in step_names(
        api.get(f"/orders/{order_id}").json(), "succeeded")
        and api.get(f"/orders/{order_id}").json())
    assert step_names(order) == ["payment.authorize", "inventory.reserve", "notify.order_confirmed"]
    assert all(s["at"].endswith("Z") for s in order["steps"])


@on_each_broker_kind
@pytest.mark.parametrize("token", ["tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds"])
def test_a_declined_card_fails_the_order_touches_no_stock_and_says_so(api, mail, token):
    order_id = place(api, token=token)
    order = wait_terminal(api, order_id)
    assert (order["status"], order["reason"]) == ("failed", "payment_declined")
    assert "inventory.reserve" not in step_names(order)
    assert "payment.refund" not in step_names(order)
    assert "could not be completed" in wait_mail(mail.maildir, order_id)["Subject"]


@on_each_broker_kind
def test_out_of_stock_refunds_the_payment_and_tells_the_customer(api, mail):
    order_id = place(api, sku="SOLDOUT-1")
    order = wait_terminal(api, order_id)
    assert (order["status"], order["reason"]) == ("failed", "out_of_stock")
    assert step_names(order) [:3] == ["payment.authorize", "inventory.reserve", "payment.refund"]
    assert [s["status"] for s in order["steps"][:3]] == ["succeeded", "failed", "succeeded"]
    assert "out of stock" in wait_mail(mail.maildir, order_id).get_content()


@on_each_broker_kind
def test_a_flaky_gateway_is_retried_until_it_approves(api):
    order = wait_terminal(api, place(api, token="tok_gatewayFlaky"))
    assert order["status"] == "confirmed"
    authorize = [(s["status"], s["attempt"]) for s in order["steps"]
                 if s["name"] == "payment.authorize"]
    assert authorize == [("retrying", 1), ("retrying", 2), ("succeeded", 3)]


@on_each_broker_kind
def test_a_gateway_that_stays_down_fails_the_order_as_unavailable(api, mail):
    order_id = place(api, token="tok_gatewayDown")
    order = wait_terminal(api, order_id)
    assert (order["status"], order["reason"]) == ("failed", "payment_unavailable")
    assert step_names(order, "retrying").count("payment.authorize") >= 2
    wait_mail(mail.maildir, order_id)


@on_each_broker_kind
def test_an_smtp_outage_never_unconfirms_an_order_and_the_mail_follows(api, mail):
    mail.stop()
    try:
        order_id = place(api)
        assert wait_terminal(api, order_id)["status"] == "confirmed"
        wait_for(lambda: "notify.order_confirmed" in step_names(
            api.get(f"/orders/{order_id}").json(), "retrying"), what="a mail retry")
        assert mails_for(mail.maildir, order_id) == []
    finally:
        mail.start()
    wait_mail(mail.maildir, order_id, timeout=60)
    order = api.get(f"/orders/{order_id}").json()
    assert order["status"] == "confirmed"
    assert len(mails_for(mail.maildir, order_id)) == 1


@on_each_broker_kind
def test_an_order_reads_confirmed_once_reserved_while_the_mail_worker_is_stopped(api, mail,
                                                                                  system):
    # The saga hears of the pivot at once: an order waiting on a stopped (or backlogged) e-mail
    # worker is confirmed, not a stalled saga that its deadline would undo.
    notify = system.supervisor.pid("notify")
    os.kill(notify, signal.SIGSTOP)
    try:
        order_id = place(api)
        order = wait_terminal(api, order_id)
        assert order["status"] == "confirmed"
        assert step_names(order, "succeeded") == ["payment.authorize", "inventory.reserve"]
        assert mails_for(mail.maildir, order_id) == []
    finally:
        os.kill(notify, signal.SIGCONT)
    wait_mail(mail.maildir, order_id)
    def mail_told() -> dict | None:
        order = api.get(f"/orders/{order_id}").json()
        return order if "notify.order_confirmed" in step_names(order, "succeeded") else None
    order = wait_for(mail_told, what="the mail's reply")
    assert order["status"] == "confirmed" and not order["needs_attention"]
    assert step_names(order, "succeeded") == ["payment.authorize", "inventory.reserve",
                                              "notify.order_confirmed"]


@on_each_broker_kind
def test_fifty_buyers_for_ten_limited_items(api, mail, system):
    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(lambda i: place(api, sku="LIMITED-1", email=f"buyer{i}@example.com"),
                            range(50)))
    orders = [wait_terminal(api, order_id, timeout=120) for order_id in ids]
    confirmed = [o for o in orders if o["status"] == "confirmed"]
    failed = [o for o in orders if o["status"] == "failed"]
    assert (len(confirmed), len(failed)) == (10, 40)
    assert {o["reason"] for o in failed} == {"out_of_stock"}
    assert all("payment.refund" in step_names(o, "succeeded") for o in failed)
    for order_id in ids:
        wait_mail(mail.maildir, order_id)
    time.sleep(1)  # a duplicate would come right behind the first
    assert all(len(mails_for(mail.maildir, order_id)) == 1 for order_id in ids)


def test_the_same_idempotency_key_never_starts_a_second_saga(api):
    body, key = order_body(), {"Idempotency-Key": f"key-{time.time_ns()}"}
    first = api.post("/orders", json=body, headers=key)
    again = api.post("/orders", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = api.post("/orders", json=order_body(quantity=3), headers=key)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    order = wait_terminal(api, first.json()["id"])
    assert step_names(order).count("payment.authorize") == 1


@pytest.mark.parametrize("body,field", [
    (order_body(sku="NOPE-1"), ["body", "items", 0, "sku"]),
    (order_body(quantity=0), ["body", "items", 0, "quantity"]),
    ({**order_body(), "items": []}, ["body", "items"]),
    (order_body(email="not-an-email"), ["body", "customer_email"]),
    ({k: v for k, v in order_body().items() if k != "payment_token"}, ["body", "payment_token"]),
])
def test_bad_orders_get_a_422_naming_the_field(api, body, field):
    response = api.post("/orders", json=body)
    assert response.status_code == 422
    assert field in [error["loc"] for error in response.json()["detail"]]


def test_garbage_bodies_and_unknown_orders_get_json_errors(api):
    response = api.post("/orders", content=b"{not json",
                        headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"]
    missing = api.get("/orders/no-such-order")
    assert missing.status_code == 404 and "no-such-order" in missing.json()["detail"]


@on_each_broker_kind
def test_a_message_that_breaks_the_contract_is_dead_lettered_and_the_worker_goes_on(api, system):
    sender = make_sender(Broker.of(system.env))
    sender.send_task("inventory.reserve", args=({"order": {"order_id": "junk-1"}},))
    cli = [sys.executable, "-m", "services.inventory", "dead-letters", "list"]

    def dead_letters():
        out = subprocess.run(cli, env=system.env, capture_output=True, text=True, check=True)
        return [json.loads(line) for line in out.stdout.splitlines()]
    [letter] = wait_for(lambda: [d for d in dead_letters() if d["order_id"] == "junk-1"],
                        what="the dead letter")
    assert letter["task"] == "inventory.reserve" and "validation error" in letter["error"]
    assert wait_terminal(api, place(api))["status"] == "confirmed"


def test_an_orders_timeline_streams_as_server_sent_events_until_it_ends(api):
    order_id = place(api)
    with api.stream("GET", f"/orders/{order_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = list(stream.iter_lines())
    events = [block.split("\n") for block in "\n".join(lines).split("\n\n") if block.strip()]
    kinds = [next(f[7:] for f in e if f.startswith("event: ")) for e in events]
    data = [json.loads(next(f[6:] for f in e if f.startswith("data: "))) for e in events]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"step"}
    assert data[-1]["status"] == "confirmed"
    assert [d["name"] for d in data[:-1] if d["status"] == "succeeded"] == [
        "payment.authorize", "inventory.reserve", "notify.order_confirmed"]
    # a client that reconnects with Last-Event-ID gets only what came after
    first_id = next(f[4:] for f in events[0] if f.startswith("id: "))
    with api.stream("GET", f"/orders/{order_id}/events",
                    headers={"Last-Event-ID": first_id}) as again:
        rest = "\n".join(again.iter_lines())
    assert rest.count("event: step") == len(kinds) - 2 and "event: end" in rest
    assert api.get("/orders/00000000-0000-4000-8000-000000000000/events").status_code == 404
