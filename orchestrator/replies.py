"""The saga worker's handlers: a step's reply (or its errback) moves the order's saga forward."""
import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import POISON, StepFailed, StepReply, utcnow
from orchestrator import saga
from orchestrator.models import Order, Outbox, SagaEvent

log = logging.getLogger("saga.orders")


def state_of(order: Order) -> saga.SagaState:
    return saga.SagaState(status=order.status, reason=order.reason,
                          compensating=tuple(order.compensating),
                          compensated=tuple(order.compensated),
                          needs_attention=order.needs_attention, closed=order.closed)


def on_reply(sessions: sessionmaker, reply: StepReply) -> list[int]:  # type: ignore[type-arg]
    """Returns the outbox rows to publish now."""
    # a poison message is a step that kept dying: it may have half-happened, like a crash
    return _apply(sessions, reply.order_id, reply.step, reply.status, reply.reason,
                  reply.attempt, reply.at, reply.detail, raised=reply.reason == POISON)


def on_step_crashed(sessions: sessionmaker, failed: StepFailed) -> list[int]:  # type: ignore[type-arg]
    reason = f"{failed.step.split('.', 1)[0]}_error"
    return _apply(sessions, failed.order_id, failed.step, "failed", reason, 0, utcnow(),
                  {"error": "the step raised; see the service's log"}, raised=True)


def _apply(sessions: sessionmaker, order_id: str, step: str, status: str,  # type: ignore[type-arg]
           reason: str | None, attempt: int, at: datetime, detail: dict[str, Any],
           raised: bool = False) -> list[int]:
    with sessions.begin() as session:
        order = session.get(Order, order_id, with_for_update=True)
        if order is None:
            log.warning("reply for unknown order order_id=%s step=%s", order_id, step)
            return []
        seen = _seen(session, order_id, step)
        succeeded_before = any(s == "succeeded" for s, _ in seen)
        if not _record(session, seen, order_id, step, status, reason, attempt, at, detail):
            return []  # a duplicate delivery: already applied
        before = state_of(order)
        if raised and succeeded_before:
            # The step's effect is done and reported; what failed came after (publishing the
            # next step in a Redis blip). Nothing to undo: the sweeper drives it on if it stalls.
            log.warning("late errback ignored order_id=%s step=%s: the step had succeeded",
                        order_id, step)
            decision = saga.Decision(before)
        elif status == "succeeded":
            decision = saga.on_succeeded(before, step)
        elif status == "failed":
            decision = saga.on_failed(before, step, reason or "failed", raised=raised)
        else:
            decision = saga.on_retrying(before, step, reason)
        _log_transition(order_id, step, status, before, decision)
        return store(session, order, decision)


def _seen(session: Session, order_id: str, step: str) -> list[tuple[str, int]]:
    """(status, attempt) of what this step already reported for the order."""
    return [(s, a) for s, a in session.execute(select(SagaEvent.status, SagaEvent.attempt).where(
        SagaEvent.order_id == order_id, SagaEvent.name == step))]


def _record(session: Session, seen: list[tuple[str, int]], order_id: str, step: str,
            status: str, reason: str | None, attempt: int, at: datetime,
            detail: dict[str, Any]) -> bool:
    # under the order's row lock, so check-then-insert cannot race. A step succeeds or fails
    # once, whatever attempt number a duplicate delivery carries; each retry is its own event.
    if any(s == status and (status != "retrying" or a == attempt) for s, a in seen):
        return False
    session.add(SagaEvent(order_id=order_id, name=step, status=status, attempt=attempt,
                          reason=reason, at=at, detail=detail))
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


def _log_transition(order_id: str, step: str, status: str, before: saga.SagaState,
                    decision: saga.Decision) -> None:
    after = decision.state
    fields = {"order_id": order_id, "event": f"{step}:{status}", "status": after.status,
              "reason": after.reason, "send": list(decision.send)}
    if after.needs_attention and not before.needs_attention:
        log.error("needs attention %s", json.dumps(fields))
    elif before.status != after.status or decision.send:
        log.info("saga %s", json.dumps(fields))

