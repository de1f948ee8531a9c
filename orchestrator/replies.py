"""The saga worker's handlers: a step's reply (or its errback) moves the order's saga forward."""
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import POISON, StepFailed, StepReply, crash_reason, utcnow
from orchestrator import saga
from orchestrator.models import Order, Outbox, SagaEvent

log = logging.getLogger("saga.orders")


def state_of(order: Order) -> saga.SagaState:
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


def on_reply(sessions: sessionmaker, reply: StepReply) -> list[int]:  # type: ignore[type-arg]
    """Returns the outbox rows to publish now. A reply brings the replies of the chain's earlier
    steps with it (they ride along the chain); they are applied first, in order."""
    # a poison message is a step that kept dying: it may have half-happened, like a crash
    events = [Event(r.step, r.status, r.reason, r.attempt, r.at, r.detail,
                    raised=r.raised or r.reason == POISON) for r in (*reply.earlier, reply)]
    return _apply(sessions, reply.order_id, events)


def on_step_crashed(sessions: sessionmaker, failed: StepFailed) -> list[int]:  # type: ignore[type-arg]
    return _apply(sessions, failed.order_id, [Event(
        failed.step, "failed", crash_reason(failed.step), 0, utcnow(),
        {"error": "the step raised; see the service's log"}, raised=True)])


def _apply(sessions: sessionmaker, order_id: str,  # type: ignore[type-arg]
           events: list[Event]) -> list[int]:
    with sessions.begin() as session:
        order = session.get(Order, order_id, with_for_update=True)
        if order is None:
            log.warning("reply for unknown order order_id=%s steps=%s", order_id,
                        [e.step for e in events])
            return []
        seen = _seen(session, order_id)
        state, send, recorded = state_of(order), [], False
        for event in events:
            succeeded_before = (event.step, "succeeded") in {(n, s) for n, s, _ in seen}
            if not _record(session, seen, order_id, event):
                continue  # a duplicate delivery: already applied
            recorded = True
            decision = _decide(state, event, succeeded_before)
            _log_transition(order_id, event, state, decision)
            state, send = decision.state, send + list(decision.send)
        if not recorded:
            return []
        return store(session, order, saga.Decision(state, tuple(send)))


def _decide(state: saga.SagaState, event: Event, succeeded_before: bool) -> saga.Decision:
    if event.raised and succeeded_before:
        # The step's effect is done and reported; what failed came after (publishing the
        # next step in a Redis blip). Nothing to undo: the sweeper drives it on if it stalls.
        log.warning("late errback ignored step=%s: the step had succeeded", event.step)
        return saga.Decision(state)
    if event.status == "succeeded":
        return saga.on_succeeded(state, event.step)
    if event.status == "failed":
        return saga.on_failed(state, event.step, event.reason or "failed", raised=event.raised)
    return saga.on_retrying(state, event.step, event.reason)


def _seen(session: Session, order_id: str) -> list[tuple[str, str, int]]:
    """(step, status, attempt) of everything the order's steps already reported."""
    return [tuple(row) for row in session.execute(  # type: ignore[misc]
        select(SagaEvent.name, SagaEvent.status, SagaEvent.attempt)
        .where(SagaEvent.order_id == order_id))]


def _record(session: Session, seen: list[tuple[str, str, int]], order_id: str,
            event: Event) -> bool:
    # under the order's row lock, so check-then-insert cannot race. A step succeeds or fails
    # once, whatever attempt number a duplicate delivery carries; each retry is its own event.
    if any(n == event.step and s == event.status and (s != "retrying" or a == event.attempt)
           for n, s, a in seen):
        return False
    session.add(SagaEvent(order_id=order_id, name=event.step, status=event.status,
                          attempt=event.attempt, reason=event.reason, at=event.at,
                          detail=event.detail))
    seen.append((event.step, event.status, event.attempt))
    return True


def store(session: Session, order: Order, decision: saga.Decision) -> list[int]:
    """Save the saga's new state and the messages it owes (outbox rows, published after commit)."""
    state = decision.state
    order.status, order.reason = state.status, state.reason
    order.compensating, order.compensated = list(state.compensating), list(state.compensated)
    order.needs_attention, order.closed = state.needs_attention, state.closed
    order.updated_at = utcnow()
    rows = [Outbox(order_id=order.id, task=task) for task in decision.send]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def _log_transition(order_id: str, event: Event, before: saga.SagaState,
                    decision: saga.Decision) -> None:
    after = decision.state
    fields = {"order_id": order_id, "event": f"{event.step}:{event.status}", "status": after.status,
              "reason": after.reason, "send": list(decision.send)}
    if after.needs_attention and not before.needs_attention:
        log.error("needs attention %s", json.dumps(fields))
    elif before.status != after.status or decision.send:
        log.info("saga %s", json.dumps(fields))

