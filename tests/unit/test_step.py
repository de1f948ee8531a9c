"""The step runner (runtime.step.SagaStep) in the test's own process: a step declared on an app
over kombu's in-memory transport, delivered as the worker's tracer delivers it, with fakes for
the dead letters and the guard. What is checked is what the saga and an operator would see: the
replies on queue `saga`, the dead letters, the retries, what the chain hands on."""
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from celery.exceptions import Retry
from sqlalchemy.exc import OperationalError

from contracts.messages import (
    AuthorizePayment,
    OrderLine,
    PaymentAuthorized,
    RefundPayment,
    SagaOrder,
)
from runtime.celery_app import SagaApp
from runtime.guard import LOCK_WAIT_S, MAX_DELIVERIES
from runtime.outcome import StepOutcome
from runtime.retries import ATTENTION_AFTER, RetryableError
from runtime.step import SagaStep
from tests.support.fakes import FakeDeadLetters, FakeGuard, deliver, drain, memory_app, replies

ORDER = SagaOrder(order_id="o-1", customer_email="ada@example.com", total_cents=1299,
                  currency="EUR", items=[OrderLine(sku="BOOK-1", quantity=1)])
PAID = PaymentAuthorized(order=ORDER, authorization_id="auth_1", amount_cents=1299)
NEXT_STEP = [{"task": "notify.order_confirmed", "args": [], "kwargs": {}, "options": {},
              "subtask_type": None, "immutable": False}]


@pytest.fixture
def dead_letters() -> FakeDeadLetters:
    return FakeDeadLetters()


@pytest.fixture
def app(dead_letters: FakeDeadLetters) -> SagaApp:
    return memory_app(dead_letters)


def step(app: SagaApp, handler: Callable[[Any], StepOutcome], name: str = "inventory.reserve",
         message: type = PaymentAuthorized, **options: Any) -> SagaStep:
    app.step(name, message=message, **options)(handler)
    task: SagaStep = app.tasks[name]
    return task


def reserved(msg: PaymentAuthorized) -> StepOutcome:
    return StepOutcome.ok(PaymentAuthorized(order=msg.order, authorization_id="x",
                                            amount_cents=1), reservation_id="res_1")


def test_a_step_that_succeeds_outside_a_chain_tells_the_saga(app: SagaApp) -> None:
    task = step(app, reserved)
    assert deliver(task, PAID.model_dump(mode="json"))["order"]["order_id"] == "o-1"
    [reply] = replies(app)
    assert (reply["order_id"], reply["step"], reply["status"]) == ("o-1", "inventory.reserve",
                                                                   "succeeded")
    detail = dict(reply["detail"])
    started_at = datetime.fromisoformat(detail.pop("started_at"))
    assert detail == {"reservation_id": "res_1", "worker": "unit@test"}
    assert started_at <= datetime.fromisoformat(reply["at"])


def test_inside_the_chain_a_success_rides_on_to_the_next_step(app: SagaApp) -> None:
    task = step(app, reserved)
    earlier = {"order_id": "o-1", "step": "payment.authorize", "status": "succeeded"}
    payload = {**PAID.model_dump(mode="json"), "replies": [earlier]}
    output = deliver(task, payload, chain=NEXT_STEP)
    assert replies(app) == []  # the saga hears it with the chain's end
    assert [r["step"] for r in output["replies"]] == ["payment.authorize", "inventory.reserve"]
    assert output["report_at_once"] == []


def test_a_step_the_saga_asked_to_hear_at_once_tells_it_and_rides_on(app: SagaApp) -> None:
    task = step(app, reserved)
    payload = {**PAID.model_dump(mode="json"), "report_at_once": ["inventory.reserve"]}
    output = deliver(task, payload, chain=NEXT_STEP)
    assert [r["status"] for r in replies(app)] == ["succeeded"]
    assert output["report_at_once"] == ["inventory.reserve"]  # carried on for later steps
    assert [r["step"] for r in output["replies"]] == ["inventory.reserve"]


def test_a_failure_stops_the_chain_and_brings_the_earlier_replies(app: SagaApp) -> None:
    def short(_: Any) -> StepOutcome:
        return StepOutcome.failed("out_of_stock", sku="BOOK-1")
    task = step(app, short)
    earlier = {"order_id": "o-1", "step": "payment.authorize", "status": "succeeded"}
    payload = {**PAID.model_dump(mode="json"), "replies": [earlier]}
    assert deliver(task, payload, chain=NEXT_STEP) is None
    [reply] = replies(app)
    assert (reply["status"], reply["reason"]) == ("failed", "out_of_stock")
    assert [r["step"] for r in reply["earlier"]] == ["payment.authorize"]


def test_a_payload_that_breaks_the_contract_is_dead_lettered_and_reported(
        app: SagaApp, dead_letters: FakeDeadLetters) -> None:
    called: list[Any] = []

    def handler(msg: Any) -> StepOutcome:
        called.append(msg)
        return StepOutcome.ok()
    task = step(app, handler)
    assert deliver(task, {"order": {"order_id": "o-1"}}) is None
    assert called == []
    [letter] = dead_letters.letters
    assert (letter["task"], letter["order_id"]) == ("inventory.reserve", "o-1")
    assert "validation error" in letter["error"]
    [reply] = replies(app)
    assert (reply["status"], reply["reason"]) == ("failed", "invalid_message")


def test_junk_without_an_order_is_dead_lettered_and_told_to_no_one(
        app: SagaApp, dead_letters: FakeDeadLetters) -> None:
    task = step(app, reserved)
    assert deliver(task, "junk") is None
    assert [d["payload"] for d in dead_letters.letters] == ["junk"]
    assert replies(app) == []


def gateway_timeout(_: Any) -> StepOutcome:
    raise RetryableError("gateway timed out")


def test_trouble_that_may_pass_is_retried_with_backoff_within_the_budget(app: SagaApp) -> None:
    task = step(app, gateway_timeout, "payment.authorize", AuthorizePayment, retry_budget=2,
                retry_backoff_s=0.5, exhausted_reason="payment_unavailable")
    payload = AuthorizePayment(order=ORDER, payment_token="tok_gatewayDown").model_dump(
        mode="json")
    for retries, wait in ((0, 0.5), (1, 1.0)):
        with pytest.raises(Retry):
            deliver(task, payload, retries=retries)
        [reply] = replies(app)
        assert (reply["status"], reply["attempt"]) == ("retrying", retries + 1)
        assert reply["detail"]["retry_in_s"] == wait
        [again] = drain(app, "payment")  # the same message, published again for later
        assert again["headers"]["retries"] == retries + 1 and again["args"] == [payload]
    assert deliver(task, payload, retries=2) is None  # the budget is spent
    [reply] = replies(app)
    assert (reply["status"], reply["reason"], reply["attempt"]) == \
        ("failed", "payment_unavailable", 3)


def test_a_persistent_step_never_gives_up_and_asks_for_a_person_when_stuck(app: SagaApp) -> None:
    def broken(_: Any) -> StepOutcome:
        raise ConnectionError("database gone")
    task = step(app, broken, "payment.refund", RefundPayment, persistent=True)
    reasons = []
    for retries in range(ATTENTION_AFTER + 1):
        with pytest.raises(Retry):
            deliver(task, {"order_id": "o-1"}, retries=retries)
        [reply] = replies(app)
        reasons.append(reply["reason"])
        drain(app, "payment")
    assert reasons == [None] * (ATTENTION_AFTER - 1) + ["stuck", "stuck"]


def test_a_step_that_raises_reports_a_crash_and_raises_on(app: SagaApp) -> None:
    def bug(_: Any) -> StepOutcome:
        raise KeyError("a bug")
    task = step(app, bug)
    with pytest.raises(KeyError):
        deliver(task, PAID.model_dump(mode="json"), chain=NEXT_STEP)
    [reply] = replies(app)
    assert (reply["status"], reply["reason"], reply["raised"]) == \
        ("failed", "inventory_error", True)


def test_a_message_whose_deliveries_keep_dying_is_dead_lettered_as_poison(
        app: SagaApp, dead_letters: FakeDeadLetters) -> None:
    ran: list[Any] = []

    def refund(msg: Any) -> StepOutcome:
        ran.append(msg)
        return StepOutcome.ok()
    task = step(app, refund, "payment.refund", RefundPayment, persistent=True)
    app.guard = FakeGuard(deliveries=MAX_DELIVERIES + 1)
    assert deliver(task, {"order_id": "o-1"}) is None
    assert ran == []
    assert "poison" in dead_letters.letters[0]["error"]
    [reply] = replies(app)
    assert (reply["status"], reply["reason"]) == ("failed", "poison_message")


def test_a_duplicate_running_alongside_comes_back_later_whatever_the_budget(app: SagaApp) -> None:
    task = step(app, reserved, retry_budget=0)
    app.guard = FakeGuard(busy=True)
    with pytest.raises(Retry) as retry:
        deliver(task, PAID.model_dump(mode="json"), retries=5)
    assert retry.value.when == LOCK_WAIT_S
    assert replies(app) == []  # not news for the saga
    assert app.guard.held == [("test:inventory.reserve:5", "o-1", "inventory.reserve")]


def test_a_task_that_raised_keeps_its_message_in_its_own_apps_dead_letters(
        app: SagaApp, dead_letters: FakeDeadLetters) -> None:
    other = FakeDeadLetters()
    memory_app(other)  # another process's app, built later, takes nothing from this one
    task = step(app, reserved)
    task.on_failure(ValueError("boom"), "t-1", (PAID.model_dump(mode="json"),), {}, None)
    assert [(d["task"], d["order_id"], d["error"]) for d in dead_letters.letters] == \
        [("inventory.reserve", "o-1", "ValueError: boom")]
    assert other.letters == []


def test_a_step_belongs_to_the_app_that_declared_it(app: SagaApp) -> None:
    step(app, reserved)
    assert "inventory.reserve" not in memory_app(FakeDeadLetters()).tasks


@pytest.mark.parametrize("options,error", [
    ({"message": PaymentAuthorized, "persistant": True}, "'persistant' is not an option"),
    ({"message": PaymentAuthorized, "retry_budjet": 3}, "'retry_budjet' is not an option"),
    ({}, "`message` (its pydantic model) is required"),
    ({"message": RefundPayment, "persistent": True, "retry_budget": 3}, "no retry budget"),
])
def test_a_wrong_option_is_an_error_where_the_step_is_declared(
        app: SagaApp, options: dict[str, Any], error: str) -> None:
    with pytest.raises(TypeError, match=error.replace("(", r"\(").replace(")", r"\)")):
        app.step("inventory.reserve", **options)(reserved)


def test_celerys_own_options_are_options_too(app: SagaApp) -> None:
    task = step(app, reserved, acks_late=True, rate_limit="10/s")
    assert (task.acks_late, task.rate_limit) == (True, "10/s")


def test_a_database_that_is_away_makes_a_step_wait_not_fail_the_order(app: SagaApp) -> None:
    def database_restarting(_: Any) -> StepOutcome:
        raise OperationalError("INSERT INTO inbox", {}, Exception("connection refused"))
    task = step(app, database_restarting, "payment.authorize", AuthorizePayment, retry_budget=1)
    payload = AuthorizePayment(order=ORDER, payment_token="tok_visa").model_dump(mode="json")
    for retries in range(4):  # past the budget: the budget is the gateway's, not the database's
        with pytest.raises(Retry):
            deliver(task, payload, retries=retries)
        [reply] = replies(app)
        assert (reply["status"], reply["reason"]) == ("retrying", None)
        assert "connection refused" in reply["detail"]["error"]
        drain(app, "payment")


def test_a_bad_payload_is_kept_on_the_queue_while_the_dead_letters_cannot_be_stored(
        app: SagaApp, dead_letters: FakeDeadLetters) -> None:
    task = step(app, reserved)
    dead_letters.database_away = True
    with pytest.raises(Retry):
        deliver(task, {"order": {"order_id": "o-1"}})
    [again] = drain(app, "inventory")  # delivered again later, not acked into nothing
    assert again["args"] == [{"order": {"order_id": "o-1"}}]
    dead_letters.database_away = False
    assert deliver(task, {"order": {"order_id": "o-1"}}, retries=1) is None
    assert [d["order_id"] for d in dead_letters.letters] == ["o-1"]
