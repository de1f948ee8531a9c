"""Each service's tasks in its real worker process, on a real Redis, on SQLite and PostgreSQL:
the effect lands in the service's own database and the reply reaches the saga (the replies'
stream)."""
import redis
from sqlalchemy import create_engine, text

from contracts.messages import (
    AuthorizePayment,
    OrderLine,
    PaymentAuthorized,
    ReleaseStock,
    SagaOrder,
    StockReserved,
)
from devstack.smtp import read_mails
from tests.support.replies import saga_replies, sender
from tests.support.waiting import wait_for


def order(order_id: str, sku: str = "BOOK-1", quantity: int = 2) -> SagaOrder:
    return SagaOrder(order_id=order_id, customer_email="ada@example.com", total_cents=2598,
                     currency="EUR", items=[OrderLine(sku=sku, quantity=quantity)])


def rows(db_url: str, sql: str) -> list:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        result = list(conn.execute(text(sql)))
    engine.dispose()
    return result


class Saga:
    """Sends tasks by name, as the orchestrator does, and reads the replies' stream."""

    def __init__(self, env):
        self.app = sender(env["REDIS_URL"])
        self.redis = redis.Redis.from_url(env["REDIS_URL"])
        self.replies: dict = {}

    def send(self, task: str, message, task_id: str | None = None) -> None:
        self.app.send_task(task, args=(message.model_dump(mode="json"),), task_id=task_id)

    def statuses(self, order_id: str, count: int) -> list[str]:
        def enough():
            got = saga_replies(self.redis, self.replies).get(order_id, [])
            return len(got) >= count and got
        return [r["status"] for r in wait_for(enough, timeout=30, what=f"{count} replies")]


def test_authorize_charges_once_even_when_the_message_comes_twice(service_worker, db_url):
    env, _ = service_worker("payment", db_url)
    saga = Saga(env)
    message = AuthorizePayment(order=order("t-pay"), payment_token="tok_visa")
    saga.send("payment.authorize", message, task_id="t-pay:payment.authorize")
    saga.send("payment.authorize", message, task_id="t-pay:payment.authorize")
    assert saga.statuses("t-pay", 2) == ["succeeded", "succeeded"]
    assert rows(db_url, "select status, amount_cents from payments") == [("authorized", 2598)]
    approved = "select count(*) from sandbox_gateway_calls where result = 'approved'"
    assert rows(db_url, approved) == [(1,)]


def test_a_flaky_gateway_is_retried_by_the_worker(service_worker, db_url):
    env, _ = service_worker("payment", db_url, PAYMENT_RETRY_BACKOFF_S="0.05",
                            GATEWAY_TIMEOUT_MS="10")
    saga = Saga(env)
    saga.send("payment.authorize", AuthorizePayment(order=order("t-flaky"),
                                                    payment_token="tok_gatewayFlaky"))
    assert saga.statuses("t-flaky", 3) == ["retrying", "retrying", "succeeded"]


def test_reserve_then_release_moves_stock_in_the_inventory_database(service_worker, db_url):
    env, _ = service_worker("inventory", db_url)
    saga = Saga(env)
    paid = PaymentAuthorized(order=order("t-inv", "LIMITED-1", 3), authorization_id="a",
                             amount_cents=1)
    saga.send("inventory.reserve", paid)
    assert saga.statuses("t-inv", 1) == ["succeeded"]
    assert rows(db_url, "select available from stock where sku = 'LIMITED-1'") == [(7,)]
    saga.send("inventory.release", ReleaseStock(order_id="t-inv"))
    assert saga.statuses("t-inv", 2) == ["succeeded", "succeeded"]
    assert rows(db_url, "select available from stock where sku = 'LIMITED-1'") == [(10,)]


def test_the_pivot_tells_the_saga_at_once_and_hands_the_order_on(service_worker, db_url):
    from celery import chain
    env, _ = service_worker("inventory", db_url)
    saga = Saga(env)
    # the saga's first message asks to hear of its pivot at once, and the chain carries it on
    paid = PaymentAuthorized(order=order("t-pivot"), authorization_id="a", amount_cents=1,
                             report_at_once=["inventory.reserve"])
    chain(saga.app.signature("inventory.reserve", args=(paid.model_dump(mode="json"),),
                             queue="inventory"),
          saga.app.signature("notify.order_confirmed", queue="notify")).apply_async()
    # no notify worker runs: the saga hears of the reservation from the pivot itself
    assert saga.statuses("t-pivot", 1) == ["succeeded"]
    # the chain's next step is published once the step has returned, just after its reply
    [handed_on] = wait_for(lambda: saga.redis.lrange("notify", 0, -1), timeout=10,
                           what="the order handed on to notify")
    assert b"t-pivot" in handed_on


def test_the_confirmation_goes_out_over_smtp_and_is_recorded(service_worker, db_url, maildrop):
    env, _ = service_worker("notify", db_url, SMTP_HOST="127.0.0.1", SMTP_PORT=str(maildrop.port))
    saga = Saga(env)
    order_id = f"t-mail-{db_url[:6]}"
    saga.send("notify.order_confirmed", StockReserved(order=order(order_id), authorization_id="a",
                                                      reservation_id="r"))
    assert saga.statuses(order_id, 1) == ["succeeded"]
    assert [m["To"] for m in read_mails(maildrop.maildir) if order_id in m["Subject"]] == [
        "ada@example.com"]
    assert rows(db_url, "select kind from mails") == [("confirmation",)]
