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

PIVOT = next(s.action for s in STEPS if s.pivot)
# A step inside the chain hands its reply on to the next step, and the saga hears the chain's
# replies with its last one. The pivot's success is told at once as well (the chain's first
# message asks for it), so that a slow or stopped e-mail worker never makes a confirmed order
# look stalled, and undone at its deadline.
REPORT_AT_ONCE = (PIVOT,)
COMPENSATIONS = frozenset(s.compensation for s in STEPS if s.compensation)
ACTIONS = tuple(s.action for s in STEPS)


@dataclass(frozen=True)
class SagaState:
    status: str = "pending"  # pending | confirmed | failed
    reason: str | None = None  # set when a step fails for good
    compensating: tuple[str, ...] = ()  # still to run, next first
    compensated: tuple[str, ...] = ()
    needs_attention: bool = False
    closed: bool = False  # the customer has been told: the saga owes nothing more

    @property
    def failing(self) -> bool:
        return self.status == "pending" and self.reason is not None


@dataclass(frozen=True)
class Decision:
    state: SagaState
    send: tuple[str, ...] = ()  # tasks to dispatch for this order now


def on_succeeded(state: SagaState, step: str) -> Decision:
    if step in COMPENSATIONS:
        if not state.compensating or state.compensating[0] != step:
            return Decision(state)  # a duplicate reply
        return _compensate_next(replace(state, compensating=state.compensating[1:],
                                        compensated=(*state.compensated, step)))
    if step == ON_FAILURE:
        return Decision(replace(state, closed=state.status == "failed"))
    if _past_pivot(step, inclusive=True) and state.status == "pending" and not state.failing:
        state = replace(state, status="confirmed")
    if step == ACTIONS[-1]:
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
    if step in COMPENSATIONS or step == ON_FAILURE or _past_pivot(step) \
            or state.status == "confirmed":
        # nothing left to undo with: a person has to look
        return Decision(replace(state, needs_attention=True))
    if state.status != "pending" or state.failing or step not in ACTIONS:
        return Decision(state)  # late or duplicate news
    done = ACTIONS.index(step) + (1 if raised else 0)
    undo = tuple(s.compensation for s in reversed(STEPS[:done]) if s.compensation)
    return _compensate_next(replace(state, reason=reason, compensating=undo))


def on_retrying(state: SagaState, step: str, reason: str | None) -> Decision:
    """A step retrying is progress; one that says it is stuck asks for a person (and goes on)."""
    if reason == STUCK and not state.closed:  # a late report about an order already settled
        return Decision(replace(state, needs_attention=True))
    return Decision(state)


def redrive(state: SagaState, age_s: float, saga_deadline_s: float) -> Decision:
    """A saga that made no progress for a step's deadline (a message lost in a Redis restart, a
    worker killed mid-step): send again what it waits for. Every step is idempotent, so the
    forward chain is simply sent again from the start. Past the saga's deadline, give up and
    compensate everything that may have happened."""
    if state.closed or state.needs_attention:
        return Decision(state)
    if state.failing:
        return Decision(state, send=state.compensating[:1])
    if state.status == "failed":
        return Decision(state, send=(ON_FAILURE,))
    if state.status == "pending" and age_s > saga_deadline_s:
        return on_failed(state, PIVOT, "timed_out", raised=True)
    return Decision(state, send=(ACTIONS[0],))


def _past_pivot(step: str, inclusive: bool = False) -> bool:
    """Replies may arrive out of order: news from after the pivot means the pivot succeeded."""
    if step not in ACTIONS:
        return False
    return ACTIONS.index(step) + (1 if inclusive else 0) > ACTIONS.index(PIVOT)


def _compensate_next(state: SagaState) -> Decision:
    if state.compensating:
        return Decision(state, send=(state.compensating[0],))
    return Decision(replace(state, status="failed"), send=(ON_FAILURE,))
