"""The saga's storage: an order's saga state and timeline in the orchestrator's database, read
and written under the order's row lock. SQLAlchemy Core statements, built once: one of these
transactions runs for every reply."""
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from orchestrator import saga
from orchestrator.models import Order, Outbox, SagaEvent
from runtime.db import utcnow

ORDERS, EVENTS, OUTBOX = Order.__table__, SagaEvent.__table__, Outbox.__table__
LOCK_ORDER = select(ORDERS).where(ORDERS.c.id == bindparam("order_id")).with_for_update()
_SEEN = select(EVENTS.c.name, EVENTS.c.status, EVENTS.c.attempt) \
    .where(EVENTS.c.order_id == bindparam("order_id"))
_ADD_EVENT = insert(EVENTS)
_SET = update(ORDERS).where(ORDERS.c.id == bindparam("order_id"))
_OWE = insert(OUTBOX).returning(OUTBOX.c.id)

# statuses of which each attempt is its own entry: a retry, a re-drive asked for, a dead letter
# (its id as the attempt)
EACH = ("retrying", "requested", saga.DEAD_LETTERED)
ENDS = ("confirmed", *saga.TERMINAL)  # the statuses an order ends in (and may leave for cancelled)
Seen = list[tuple[str, str, int]]  # (step, status, attempt) of every event recorded


@dataclass(frozen=True)
class Event:
    """One thing a step reported, as the saga records it."""

    step: str
    status: str
    reason: str | None
    attempt: int
    at: datetime
    detail: dict[str, Any]
    raised: bool = False  # it crashed rather than answered: it may have half-happened


def lock(conn: Connection, order_id: str) -> Row[Any] | None:
    """The order's row, locked for the rest of the transaction."""
    return conn.execute(LOCK_ORDER, {"order_id": order_id}).first()


def state_of(order: Row[Any], seen: Seen) -> saga.SagaState:
    return saga.SagaState(status=order.status, reason=order.reason,
                          compensating=tuple(order.compensating),
                          compensated=tuple(order.compensated),
                          needs_attention=order.needs_attention, closed=order.closed,
                          succeeded=frozenset(n for n, s, _ in seen if s == "succeeded"),
                          failed=frozenset(n for n, s, _ in seen if s == "failed"))


def seen(conn: Connection, order_id: str) -> Seen:
    return [(n, s, a) for n, s, a in conn.execute(_SEEN, {"order_id": order_id})]


def record(conn: Connection, seen: Seen, order_id: str, event: Event) -> bool:
    """Add the event to the timeline; False if it is there already (a duplicate delivery).
    Under the order's row lock, so check-then-insert cannot race. A step succeeds or fails
    once, whatever attempt number a duplicate delivery carries; each retry is its own event."""
    if any(n == event.step and s == event.status and (s not in EACH or a == event.attempt)
           for n, s, a in seen):
        return False
    conn.execute(_ADD_EVENT, {"order_id": order_id, "name": event.step, "status": event.status,
                              "attempt": event.attempt, "reason": event.reason, "at": event.at,
                              "detail": event.detail})
    seen.append((event.step, event.status, event.attempt))
    return True


def store(conn: Connection, order: Row[Any], decision: saga.Decision, **more: Any) -> list[int]:
    """Save the saga's new state over the order's locked row, and the messages it owes (outbox
    rows, published after commit). A new terminal status is stamped with when it was reached."""
    state, now, order_id = decision.state, utcnow(), order.id
    if state.status != order.status and state.status in ENDS:
        more["ended_at"] = now
    conn.execute(_SET, {"order_id": order_id, "status": state.status, "reason": state.reason,
                        "compensating": list(state.compensating),
                        "compensated": list(state.compensated),
                        "needs_attention": state.needs_attention, "closed": state.closed,
                        "updated_at": now, **more})
    return [conn.execute(_OWE, {"order_id": order_id, "task": task, "created_at": now,
                                "sent_at": None, "attempts": 0}).scalar_one()
            for task in decision.send]
