"""The order saga: its steps in order, each with the compensation that undoes it, and the rules
that move an order's saga forward. Pure: no Celery, no database."""
from dataclasses import dataclass, replace

from contracts.messages import STUCK
from contracts.names import Task


@dataclass(frozen=True)
class Step:
    action: str
    compensation: str | None = None
    pivot: bool = False  # the point of no return: once it succeeds the order is confirmed


# The saga, top to bottom. One Celery chain runs the actions; a step that fails for good stops
# the chain, and the compensations of the steps before it run in reverse.
STEPS = (
    Step(Task.AUTHORIZE_PAYMENT, compensation=Task.REFUND_PAYMENT),
    Step(Task.RESERVE_STOCK, compensation=Task.RELEASE_STOCK, pivot=True),
    Step(Task.SEND_CONFIRMATION),  # after the pivot: retried until delivered, never undone
)
ON_FAILURE = Task.SEND_FAILURE_NOTICE  # after the compensations: tell the customer
# A cancel asked for through the API undoes every step up to the pivot (a confirmed order too)
# and tells the customer, after the confirmation if that was on its way.
ON_CANCEL = Task.SEND_CANCELLATION_NOTICE
CANCELLED = "cancelled"  # the reason of a cancelled order, and what a step that finds its order
# already compensated answers (it refuses to act)

PIVOT = next(s.action for s in STEPS if s.pivot)
# A step inside the chain hands its reply on to the next step, and the saga hears the chain's
# replies with its last one. The pivot's success is told at once as well (the chain's first
# message asks for it), so that a slow or stopped e-mail worker never makes a confirmed order
# look stalled, and undone at its deadline.
REPORT_AT_ONCE = (PIVOT,)
COMPENSATIONS = frozenset(s.compensation for s in STEPS if s.compensation)
ACTIONS = tuple(s.action for s in STEPS)
DEAD_LETTERED = "dead_lettered"  # a timeline entry's status: a service kept a message about the
# order as a dead letter
NOTICES = frozenset((ON_FAILURE, ON_CANCEL))
LAST = ACTIONS[-1]
TERMINAL = ("failed", CANCELLED)  # the states a customer's notice ends; `confirmed` may still be
# cancelled


@dataclass(frozen=True)
class SagaState:
    status: str = "pending"  # pending | confirmed | failed | cancelled
    reason: str | None = None  # set when a step fails for good, or the order is cancelled
    compensating: tuple[str, ...] = ()  # still to run, next first
    compensated: tuple[str, ...] = ()
    needs_attention: bool = False
    closed: bool = False  # the customer has been told: the saga owes nothing more
    # from the timeline: the steps that succeeded, and those that failed for good
    succeeded: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()

    @property
    def undoing(self) -> bool:
        """Compensations are running, for a failure or a cancel."""
        return self.status in ("pending", "confirmed") and self.reason is not None

    @property
    def cancelled(self) -> bool:
        """Cancelled, or being cancelled."""
        return self.reason == CANCELLED

    @property
    def confirming(self) -> bool:
        """The pivot succeeded and the confirmation e-mail has not settled yet."""
        return PIVOT in self.succeeded and not {LAST} & (self.succeeded | self.failed)


@dataclass(frozen=True)
class Decision:
    state: SagaState
    send: tuple[str, ...] = ()  # tasks to dispatch for this order now


def on_succeeded(state: SagaState, step: str) -> Decision:
    state = replace(state, succeeded=state.succeeded | {step})
    if step in COMPENSATIONS:
        if not state.compensating or state.compensating[0] != step:
            return Decision(state)  # a duplicate reply
        # progress on what a person may have re-driven: the flag is answered
        return _compensate_next(replace(state, compensating=state.compensating[1:],
                                        compensated=(*state.compensated, step),
                                        needs_attention=False))
    if step in NOTICES:
        closed = state.status in TERMINAL
        return Decision(replace(state, closed=closed,
                                needs_attention=state.needs_attention and not closed))
    if _past_pivot(step, inclusive=True) and state.status == "pending" and not state.undoing:
        state = replace(state, status="confirmed")
    if step == LAST:
        if state.cancelled:
            # the confirmation went out before the cancel could stop it: the cancellation
            # notice follows it, once the compensations are done
            return _notice_if_waiting(state)
        if state.status == "confirmed":
            # the customer is told; an earlier alarm about the mail (a crash report racing the
            # success) is answered
            return Decision(replace(state, closed=True, needs_attention=False))
        # told "confirmed" while the saga is undoing the order: a person must sort it out
        return Decision(replace(state, needs_attention=True))
    return Decision(state)


def on_failed(state: SagaState, step: str, reason: str, raised: bool = False) -> Decision:
    """`raised`: the step crashed rather than answered, so it may have half-happened and its
    own compensation runs too (compensations are no-ops where there is nothing to undo)."""
    state = replace(state, failed=state.failed | {step})
    if state.cancelled and reason == CANCELLED:
        # a late step refused to act on a cancelled order, as it should; a refused confirmation
        # has settled, so the cancellation notice need not wait for it
        return _notice_if_waiting(state) if step == LAST else Decision(state)
    if step in COMPENSATIONS or step in NOTICES or _past_pivot(step) \
            or state.status == "confirmed":
        # nothing left to undo with: a person has to look
        flagged = replace(state, needs_attention=True)
        return _notice_if_waiting(flagged) if step == LAST and state.cancelled \
            else Decision(flagged)
    if state.status != "pending" or state.undoing or step not in ACTIONS:
        return Decision(state)  # late or duplicate news
    done = ACTIONS.index(step) + (1 if raised else 0)
    undo = tuple(s.compensation for s in reversed(STEPS[:done]) if s.compensation)
    return _compensate_next(replace(state, reason=reason, compensating=undo))


def on_retrying(state: SagaState, step: str, reason: str | None) -> Decision:
    """A step retrying is progress; one that says it is stuck asks for a person (and goes on)."""
    if reason == STUCK and not state.closed:  # a late report about an order already settled
        return Decision(replace(state, needs_attention=True))
    return Decision(state)


def on_dead_letter(state: SagaState) -> Decision:
    """A service kept a message about this order as a dead letter: a person should look."""
    return Decision(replace(state, needs_attention=True))


def cancel(state: SagaState) -> Decision | None:
    """A cancel asked for: undo everything up to the pivot, whatever has run (a compensation
    with nothing to undo is a no-op, and leaves a mark that makes a late step refuse), then tell
    the customer. None: the order failed, or is failing, and cannot be cancelled."""
    if state.cancelled:
        return Decision(state)  # asked again: nothing more to do
    if state.status == "failed" or state.undoing:
        return None
    upto = ACTIONS.index(PIVOT) + 1
    undo = tuple(s.compensation for s in reversed(STEPS[:upto]) if s.compensation)
    return _compensate_next(replace(state, reason=CANCELLED, compensating=undo, closed=False,
                                    needs_attention=False))


def owed(state: SagaState) -> tuple[str, ...]:
    """What the saga waits for: the message to send again when it stalled."""
    if state.undoing:
        return state.compensating[:1]
    if state.status == "failed":
        return () if state.closed else (ON_FAILURE,)
    if state.status == CANCELLED and not state.confirming:
        return () if state.closed else (ON_CANCEL,)
    # the forward chain, again from the start: every step is idempotent, so the steps that ran
    # answer what they did and the chain goes on from where it stopped
    return () if state.closed else (ACTIONS[0],)


def redrive(state: SagaState, age_s: float, saga_deadline_s: float) -> Decision:
    """A saga that made no progress for a step's deadline (a message lost in a Redis restart, a
    worker killed mid-step): send again what it waits for. Past the saga's deadline, a pending
    order gives up and compensates everything that may have happened."""
    if state.closed or state.needs_attention:
        return Decision(state)
    if state.status == "pending" and not state.undoing and age_s > saga_deadline_s:
        return on_failed(state, PIVOT, "timed_out", raised=True)
    return Decision(state, send=owed(state))


def retry(state: SagaState) -> Decision | None:
    """A person re-drives an order flagged for attention, having fixed its cause: send again what
    it waits for; the flag clears when that succeeds. An order that waits for nothing (the flag
    was a report: a dead letter, a mail that contradicts the saga) has its flag cleared at once.
    None: the order needs nothing."""
    if not state.needs_attention:
        return None
    send = owed(state)
    return Decision(replace(state, needs_attention=bool(send)), send=send)


def _past_pivot(step: str, inclusive: bool = False) -> bool:
    """Replies may arrive out of order: news from after the pivot means the pivot succeeded."""
    if step not in ACTIONS:
        return False
    return ACTIONS.index(step) + (1 if inclusive else 0) > ACTIONS.index(PIVOT)


def _compensate_next(state: SagaState) -> Decision:
    if state.compensating:
        return Decision(state, send=(state.compensating[0],))
    if state.cancelled:
        # the confirmation on its way goes out first: the customer reads them in order
        return _notice_if_waiting(replace(state, status=CANCELLED))
    return Decision(replace(state, status="failed"), send=(ON_FAILURE,))


def _notice_if_waiting(state: SagaState) -> Decision:
    """A cancelled order tells its customer once the compensations are done and the
    confirmation, if it was on its way, has settled."""
    if state.status == CANCELLED and not state.closed and not state.confirming:
        return Decision(state, send=(ON_CANCEL,))
    return Decision(state)
