"""Steering an order from the API: cancel it, or re-drive one flagged for attention. Each is one
transaction under the order's row lock, like a step's reply: the saga decides (orchestrator.saga),
the timeline records who asked, and what the decision owes goes to the outbox."""
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Engine

from contracts.messages import utcnow
from orchestrator import saga, saga_store
from orchestrator.saga_store import Event, Seen

log = logging.getLogger("saga.orders")

CANCEL, RETRY = "order.cancel", "order.retry"  # their entries in the timeline
Answer = Literal["accepted", "already", "refused", "unknown"]


@dataclass(frozen=True)
class Steered:
    answer: Answer
    status: str | None = None  # the order's status after the request
    owed: list[int] = field(default_factory=list)  # outbox rows to publish now


def cancel(db: Engine, order_id: str, reason: str | None) -> Steered:
    """`already`: the order is cancelled or being cancelled; `refused`: it failed, or is
    failing (its compensations are running for another reason)."""
    def decide(state: saga.SagaState, seen: Seen) -> Steered | tuple[saga.Decision, Event]:
        if state.cancelled:
            return Steered("already", state.status)
        decision = saga.cancel(state)
        if decision is None:
            return Steered("refused", state.status)
        return decision, Event(CANCEL, "requested", saga.CANCELLED, 0, utcnow(),
                               {"reason": reason} if reason else {})
    return _steer(db, order_id, decide)


def retry(db: Engine, order_id: str) -> Steered:
    """`refused`: the order needs nothing."""
    def decide(state: saga.SagaState, seen: Seen) -> Steered | tuple[saga.Decision, Event]:
        decision = saga.retry(state)
        if decision is None:
            return Steered("refused", state.status)
        # each re-drive is its own entry: attempt counts them
        attempt = 1 + sum(1 for name, _, _ in seen if name == RETRY)
        return decision, Event(RETRY, "requested", None, attempt, utcnow(),
                               {"sent": list(decision.send)})
    return _steer(db, order_id, decide)


def _steer(db: Engine, order_id: str,
           decide: Callable[[saga.SagaState, Seen], Steered | tuple[saga.Decision, Event]],
           ) -> Steered:
    """Under the order's row lock: `decide` answers at once, or with the saga's decision and
    the timeline entry that records who asked."""
    with db.begin() as conn:
        order = saga_store.lock(conn, order_id)
        if order is None:
            return Steered("unknown")
        seen = saga_store.seen(conn, order_id)
        state = saga_store.state_of(order, seen)
        answer = decide(state, seen)
        if isinstance(answer, Steered):
            return answer
        decision, event = answer
        saga_store.record(conn, seen, order_id, event)
        owed = saga_store.store(conn, order, decision)
    _log(order_id, event.step, state, decision)
    return Steered("accepted", decision.state.status, owed)


def _log(order_id: str, what: str, before: saga.SagaState, decision: saga.Decision) -> None:
    log.info("saga %s", json.dumps({"order_id": order_id, "event": f"{what}:requested",
                                    "was": before.status, "status": decision.state.status,
                                    "send": list(decision.send)}))
