"""The saga's rules, without Celery or a database."""
from contracts.names import Task
from orchestrator.saga import (
    SagaState,
    cancel,
    on_dead_letter,
    on_failed,
    on_retrying,
    on_succeeded,
    redrive,
    retry,
)


def run(*events: tuple[str, str, str | None],
        state: SagaState | None = None) -> tuple[SagaState, list[str]]:
    """Feed (step, status, reason) events; return the final state and everything sent.
    ("order", "cancel", None) is a cancel asked for through the API."""
    state, sent = state or SagaState(), []
    for step, status, reason in events:
        if status == "cancel":
            cancelled = cancel(state)
            assert cancelled is not None, "the cancel was refused"
            decision = cancelled
        elif status == "succeeded":
            decision = on_succeeded(state, step)
        else:
            decision = on_failed(state, step, reason or "x", raised=status == "raised")
        state = decision.state
        sent += decision.send
    return state, sent


def test_the_order_is_confirmed_once_stock_is_reserved():
    state, sent = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                      (Task.RESERVE_STOCK, "succeeded", None))
    assert (state.status, state.reason, sent) == ("confirmed", None, [])


def test_a_declined_payment_fails_with_nothing_to_undo_and_tells_the_customer():
    state, sent = run((Task.AUTHORIZE_PAYMENT, "failed", "payment_declined"))
    assert (state.status, state.reason) == ("failed", "payment_declined")
    assert sent == [Task.SEND_FAILURE_NOTICE]


def test_out_of_stock_refunds_the_payment_before_the_order_fails():
    state, sent = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                      (Task.RESERVE_STOCK, "failed", "out_of_stock"))
    assert (state.status, sent) == ("pending", [Task.REFUND_PAYMENT])
    state, more = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                      (Task.RESERVE_STOCK, "failed", "out_of_stock"),
                      (Task.REFUND_PAYMENT, "succeeded", None))
    assert (state.status, state.reason) == ("failed", "out_of_stock")
    assert more == [Task.REFUND_PAYMENT, Task.SEND_FAILURE_NOTICE]
    assert state.compensated == (Task.REFUND_PAYMENT,)


def test_a_step_that_crashed_is_compensated_too_in_reverse_order():
    state, sent = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                      (Task.RESERVE_STOCK, "raised", "inventory_error"),
                      (Task.RELEASE_STOCK, "succeeded", None),
                      (Task.REFUND_PAYMENT, "succeeded", None))
    assert sent == [Task.RELEASE_STOCK, Task.REFUND_PAYMENT, Task.SEND_FAILURE_NOTICE]
    assert (state.status, state.reason) == ("failed", "inventory_error")


def test_duplicate_and_late_news_change_nothing():
    state, sent = run((Task.AUTHORIZE_PAYMENT, "failed", "payment_declined"),
                      (Task.AUTHORIZE_PAYMENT, "failed", "payment_declined"),
                      (Task.AUTHORIZE_PAYMENT, "raised", "payment_error"))
    assert (state.status, state.reason, sent) == ("failed", "payment_declined",
                                                  [Task.SEND_FAILURE_NOTICE])


def test_news_from_after_the_pivot_arriving_first_confirms_and_never_compensates():
    state, sent = run((Task.SEND_CONFIRMATION, "succeeded", None),
                      (Task.RESERVE_STOCK, "succeeded", None))
    assert (state.status, sent) == ("confirmed", [])
    state, sent = run((Task.SEND_CONFIRMATION, "failed", "mail_rejected"))
    assert (state.status, state.needs_attention, sent) == ("pending", True, [])


def test_a_compensation_that_fails_for_good_asks_for_a_person():
    state, sent = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                      (Task.RESERVE_STOCK, "failed", "out_of_stock"),
                      (Task.REFUND_PAYMENT, "raised", "payment_error"))
    assert state.needs_attention and state.status == "pending"
    assert sent == [Task.REFUND_PAYMENT]


def test_the_saga_closes_when_the_customer_has_been_told():
    state, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                   (Task.RESERVE_STOCK, "succeeded", None))
    assert not state.closed
    state, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                   (Task.RESERVE_STOCK, "succeeded", None),
                   (Task.SEND_CONFIRMATION, "succeeded", None))
    assert state.closed and state.status == "confirmed"
    assert redrive(state, age_s=10_000, saga_deadline_s=60).send == ()


def test_a_stalled_saga_is_driven_again_from_where_it_waits():
    assert redrive(SagaState(), 5, 60).send == (Task.AUTHORIZE_PAYMENT,)
    confirmed = SagaState(status="confirmed")
    assert redrive(confirmed, 5_000, 60).send == (Task.AUTHORIZE_PAYMENT,)  # ends in the mail
    compensating, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                          (Task.RESERVE_STOCK, "failed", "out_of_stock"))
    assert redrive(compensating, 5, 60).send == (Task.REFUND_PAYMENT,)
    failed, _ = run((Task.AUTHORIZE_PAYMENT, "failed", "payment_declined"))
    assert redrive(failed, 5, 60).send == (Task.SEND_FAILURE_NOTICE,)


def test_past_its_deadline_a_pending_saga_compensates_everything_that_may_have_happened():
    decision = redrive(SagaState(), age_s=61, saga_deadline_s=60)
    assert decision.state.reason == "timed_out"
    assert decision.send == (Task.RELEASE_STOCK,)
    assert decision.state.compensating == (Task.RELEASE_STOCK, Task.REFUND_PAYMENT)


def test_a_crash_report_about_the_mail_is_answered_when_the_mail_goes_out():
    state, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                   (Task.RESERVE_STOCK, "succeeded", None),
                   (Task.SEND_CONFIRMATION, "raised", "notify_error"))
    assert state.needs_attention
    state = on_succeeded(state, Task.SEND_CONFIRMATION).state
    assert (state.status, state.closed, state.needs_attention) == ("confirmed", True, False)


def test_a_step_that_says_it_is_stuck_flags_the_order_and_keeps_it_going():
    state, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                   (Task.RESERVE_STOCK, "failed", "out_of_stock"))
    decision = on_retrying(state, Task.REFUND_PAYMENT, "stuck")
    assert decision.state.needs_attention and decision.state.compensating == state.compensating
    assert not on_retrying(state, Task.REFUND_PAYMENT, None).state.needs_attention


def test_a_confirmation_that_arrives_while_compensating_asks_for_a_person():
    state = redrive(SagaState(), age_s=1000, saga_deadline_s=900).state  # timed out
    state = on_succeeded(state, Task.RESERVE_STOCK).state
    state = on_succeeded(state, Task.SEND_CONFIRMATION).state
    assert state.needs_attention and not state.closed and state.compensating


def test_a_failure_notice_that_finds_the_confirmation_sent_asks_for_a_person():
    # out of stock, refunded; but the customer already had the confirmation (the chain went on)
    state, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                   (Task.RESERVE_STOCK, "failed", "out_of_stock"),
                   (Task.REFUND_PAYMENT, "succeeded", None),
                   (Task.SEND_FAILURE_NOTICE, "failed", "other_mail_sent"))
    assert (state.status, state.needs_attention, state.closed) == ("failed", True, False)


def test_a_confirmed_saga_never_times_out_into_compensation():
    # the pivot is told at once: past the deadline, an order waiting for its e-mail is driven
    # on toward the e-mail, never undone
    confirmed, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                       (Task.RESERVE_STOCK, "succeeded", None))
    decision = redrive(confirmed, age_s=10_000, saga_deadline_s=60)
    assert (decision.state.status, decision.state.reason) == ("confirmed", None)
    assert decision.send == (Task.AUTHORIZE_PAYMENT,) and not decision.state.compensating


def test_a_stuck_report_that_arrives_after_the_order_closed_changes_nothing():
    state, _ = run((Task.AUTHORIZE_PAYMENT, "succeeded", None),
                   (Task.RESERVE_STOCK, "succeeded", None),
                   (Task.SEND_CONFIRMATION, "succeeded", None))
    assert state.closed
    assert not on_retrying(state, Task.SEND_CONFIRMATION, "stuck").state.needs_attention


CANCEL = ("order", "cancel", None)
PAID = (Task.AUTHORIZE_PAYMENT, "succeeded", None)
RESERVED = (Task.RESERVE_STOCK, "succeeded", None)
MAILED = (Task.SEND_CONFIRMATION, "succeeded", None)
RELEASED = (Task.RELEASE_STOCK, "succeeded", None)
REFUNDED = (Task.REFUND_PAYMENT, "succeeded", None)


def test_a_pending_order_cancelled_undoes_everything_up_to_the_pivot_then_tells_the_customer():
    state, sent = run(CANCEL, RELEASED, REFUNDED)
    assert sent == [Task.RELEASE_STOCK, Task.REFUND_PAYMENT, Task.SEND_CANCELLATION_NOTICE]
    assert (state.status, state.reason, state.closed) == ("cancelled", "cancelled", False)
    state, _ = run((Task.SEND_CANCELLATION_NOTICE, "succeeded", None), state=state)
    assert state.closed and not state.needs_attention


def test_a_step_that_refuses_after_the_cancel_is_expected_news():
    state, sent = run(CANCEL, RELEASED, (Task.AUTHORIZE_PAYMENT, "failed", "cancelled"),
                      REFUNDED)
    assert (state.status, state.needs_attention) == ("cancelled", False)
    assert sent[-1] == Task.SEND_CANCELLATION_NOTICE


def test_a_confirmed_order_cancelled_is_refunded_and_released_after_its_confirmation():
    state, sent = run(PAID, RESERVED, MAILED, CANCEL, RELEASED, REFUNDED,
                      (Task.SEND_CANCELLATION_NOTICE, "succeeded", None))
    assert sent == [Task.RELEASE_STOCK, Task.REFUND_PAYMENT, Task.SEND_CANCELLATION_NOTICE]
    assert (state.status, state.closed, state.compensated) == (
        "cancelled", True, (Task.RELEASE_STOCK, Task.REFUND_PAYMENT))


def test_the_cancellation_notice_waits_for_a_confirmation_that_is_on_its_way():
    # cancelled after the pivot, before the e-mail: the confirmation goes out first
    state, sent = run(PAID, RESERVED, CANCEL, RELEASED, REFUNDED)
    assert (state.status, sent) == ("cancelled", [Task.RELEASE_STOCK, Task.REFUND_PAYMENT])
    assert redrive(state, 5, 60).send == (Task.AUTHORIZE_PAYMENT,)  # drives the e-mail on
    state, more = run(MAILED, state=state)
    assert more == [Task.SEND_CANCELLATION_NOTICE] and not state.needs_attention
    # the same when the pivot's success arrives after the cancel
    state, sent = run(PAID, CANCEL, RESERVED, RELEASED, REFUNDED, MAILED)
    assert sent[-1] == Task.SEND_CANCELLATION_NOTICE and sent.count(sent[-1]) == 1
    # and when the confirmation settles before the compensations are done
    state, sent = run(PAID, RESERVED, CANCEL, MAILED, RELEASED, REFUNDED)
    assert sent[-1] == Task.SEND_CANCELLATION_NOTICE and sent.count(sent[-1]) == 1


def test_cancel_is_idempotent_and_refused_for_a_failed_or_failing_order():
    state, sent = run(CANCEL, CANCEL)
    assert sent == [Task.RELEASE_STOCK] and state.reason == "cancelled"
    failed, _ = run((Task.AUTHORIZE_PAYMENT, "failed", "payment_declined"))
    assert cancel(failed) is None
    failing, _ = run(PAID, (Task.RESERVE_STOCK, "failed", "out_of_stock"))
    assert cancel(failing) is None


def test_a_re_drive_sends_what_the_flagged_order_waits_for_and_the_success_clears_the_flag():
    stuck, _ = run(PAID, (Task.RESERVE_STOCK, "failed", "out_of_stock"),
                   (Task.REFUND_PAYMENT, "failed", "payment_unavailable"))
    assert stuck.needs_attention and redrive(stuck, 5, 60).send == ()  # the sweeper leaves it
    decision = retry(stuck)
    assert decision is not None and decision.send == (Task.REFUND_PAYMENT,)
    assert decision.state.needs_attention  # until the refund succeeds
    state, sent = run(REFUNDED, state=decision.state)
    assert sent == [Task.SEND_FAILURE_NOTICE] and not state.needs_attention
    assert retry(state) is None  # nothing needs a person now


def test_a_re_drive_of_an_order_that_waits_for_nothing_clears_its_flag():
    done, _ = run(PAID, RESERVED, MAILED)
    flagged = on_dead_letter(done).state
    assert flagged.needs_attention
    decision = retry(flagged)
    assert decision is not None and decision.send == () and not decision.state.needs_attention
