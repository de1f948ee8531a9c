"""The saga worker's handlers: a step's reply (or its errback) moves the order's saga forward."""
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, bindparam, insert, select, update

from contracts.messages import POISON, StepFailed, StepReply, crash_reason, utcnow
from orchestrator import saga
from orchestrator.models import Order, Outbox, SagaEvent

log = logging.getLogger("saga.orders")

# Core statements, built once: one of these transactions runs for every reply
ORDERS, EVENTS, OUTBOX = Order.__table__, SagaEvent.__table__, Outbox.__table__
LOCK_ORDER = select(ORDERS).where(ORDERS.c.id == bindparam("order_id")).with_for_update()
_SEEN = select(EVENTS.c.name, EVENTS.c.status, EVENTS.c.attempt) \
    .where(EVENTS.c.order_id == bindparam("order_id"))
_ADD_EVENT = insert(EVENTS)
_SET = update(ORDERS).where(ORDERS.c.id == bindparam("order_id"))
_OWE = insert(OUTBOX).returning(OUTBOX.c.id)


def state_of(order: Row[Any]) -> saga.SagaState:
    return saga.SagaState(status=order.status, reason=order.reason,
                          compensating=tuple(order.compensating),
                          compensated=tuple(order.compensated),
                          needs_attention=order.needs_attention, closed=order.closed)


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


def on_reply(db: Engine, reply: StepReply) -> list[int]:
    """Returns the outbox rows to publish now. A reply brings the replies of the chain's earlier
    steps with it (they ride along the chain); they are applied first, in order."""
    # a poison message is a step that kept dying: it may have half-happened, like a crash
    events = [Event(r.step, r.status, r.reason, r.attempt, r.at, r.detail,
                    raised=r.raised or r.reason == POISON) for r in (*reply.earlier, reply)]
    return _apply(db, reply.order_id, events)


def on_step_crashed(db: Engine, failed: StepFailed) -> list[int]:
    return _apply(db, failed.order_id, [Event(
        failed.step, "failed", crash_reason(failed.step), 0, utcnow(),
        {"error": "the step raised; see the service's log"}, raised=True)])


def _apply(db: Engine, order_id: str, events: list[Event]) -> list[int]:
    with db.begin() as conn:
        order = conn.execute(LOCK_ORDER, {"order_id": order_id}).first()
        if order is None:
            log.warning("reply for unknown order order_id=%s steps=%s", order_id,
                        [e.step for e in events])
            return []
        seen = [(n, s, a) for n, s, a in conn.execute(_SEEN, {"order_id": order_id})]
        state, send, recorded = state_of(order), [], False
        for event in events:
            succeeded_before = (event.step, "succeeded") in {(n, s) for n, s, _ in seen}
            if not _record(conn, seen, order_id, event):
                continue  # a duplicate delivery: already applied
            recorded = True
            decision = _decide(state, event, succeeded_before)
            _log_transition(order_id, event, state, decision)
            state, send = decision.state, send + list(decision.send)
        if not recorded:
            return []
        return store(conn, order_id, saga.Decision(state, tuple(send)))


def _decide(state: saga.SagaState, event: Event, succeeded_before: bool) -> saga.Decision:
    if event.raised and succeeded_before:
        # The step's effect is done and reported; what failed came after (publishing the
        # next step in a Redis blip). Nothing to undo: the sweeper drives it on if it stalls.
        log.warning("late errback ignored step=%s: the step had succeeded", event.step)
        return saga.Decision(state)
    if event.status == "retrying" and succeeded_before:
        return saga.Decision(state)  # a retry report delayed past the step's success
    if event.status == "succeeded":
        return saga.on_succeeded(state, event.step)
    if event.status == "failed":
        return saga.on_failed(state, event.step, event.reason or "failed", raised=event.raised)
    return saga.on_retrying(state, event.step, event.reason)


def _record(conn: Connection, seen: list[tuple[str, str, int]], order_id: str,
            event: Event) -> bool:
    # under the order's row lock, so check-then-insert cannot race. A step succeeds or fails
    # once, whatever attempt number a duplicate delivery carries; each retry is its own event.
    if any(n == event.step and s == event.status and (s != "retrying" or a == event.attempt)
           for n, s, a in seen):
        return False
    conn.execute(_ADD_EVENT, {"order_id": order_id, "name": event.step, "status": event.status,
                              "attempt": event.attempt, "reason": event.reason, "at": event.at,
                              "detail": event.detail})
    seen.append((event.step, event.status, event.attempt))
    return True


def store(conn: Connection, order_id: str, decision: saga.Decision, **more: Any) -> list[int]:
    """Save the saga's new state and the messages it owes (outbox rows, published after commit)."""
    state, now = decision.state, utcnow()
    conn.execute(_SET, {"order_id": order_id, "status": state.status, "reason": state.reason,
                        "compensating": list(state.compensating),
                        "compensated": list(state.compensated),
                        "needs_attention": state.needs_attention, "closed": state.closed,
                        "updated_at": now, **more})
    return [conn.execute(_OWE, {"order_id": order_id, "task": task, "created_at": now,
                                "sent_at": None, "attempts": 0}).scalar_one()
            for task in decision.send]


def _log_transition(order_id: str, event: Event, before: saga.SagaState,
                    decision: saga.Decision) -> None:
    after = decision.state
    fields = {"order_id": order_id, "event": f"{event.step}:{event.status}", "status": after.status,
              "reason": after.reason, "send": list(decision.send)}
    if after.needs_attention and not before.needs_attention:
        log.error("needs attention %s", json.dumps(fields))
    elif before.status != after.status or decision.send:
        log.info("saga %s", json.dumps(fields))

