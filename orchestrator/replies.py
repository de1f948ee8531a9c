"""Applying what the steps report: a step's reply (or its errback) moves the order's saga on,
in one transaction that records the timeline and owes the messages the saga decides to send."""
import json
import logging

from sqlalchemy import Connection, Engine

from contracts.messages import POISON, StepFailed, StepReply, crash_reason, utcnow
from orchestrator import saga, saga_store
from orchestrator.saga_store import Event

log = logging.getLogger("saga.orders")


def on_reply(db: Engine, reply: StepReply) -> list[int]:
    """Returns the outbox rows to publish now. A reply brings the replies of the chain's earlier
    steps with it (they ride along the chain); they are applied first, in order."""
    with db.begin() as conn:
        return apply_reply(conn, reply)


def apply_reply(conn: Connection, reply: StepReply) -> list[int]:
    """on_reply, inside a transaction of the caller's (a batch of replies shares one)."""
    # a poison message is a step that kept dying: it may have half-happened, like a crash
    events = [Event(r.step, r.status, r.reason, r.attempt, r.at, r.detail,
                    raised=r.raised or r.reason == POISON) for r in (*reply.earlier, reply)]
    return apply(conn, reply.order_id, events)


def on_step_crashed(db: Engine, failed: StepFailed) -> list[int]:
    with db.begin() as conn:
        return apply(conn, failed.order_id, [Event(
            failed.step, "failed", crash_reason(failed.step), 0, utcnow(),
            {"error": "the step raised; see the service's log"}, raised=True)])


def apply(conn: Connection, order_id: str, events: list[Event]) -> list[int]:
    """Under the order's row lock, read afresh: a second reply about the order in the same
    transaction (a batch) starts from what the first one stored."""
    order = saga_store.lock(conn, order_id)
    if order is None:
        log.warning("reply for unknown order order_id=%s steps=%s", order_id,
                    [e.step for e in events])
        return []
    seen = saga_store.seen(conn, order_id)
    state, recorded = saga_store.state_of(order, seen), False
    send: list[str] = []
    for event in events:
        if not saga_store.record(conn, seen, order_id, event):
            continue  # a duplicate delivery: already applied
        recorded = True
        decision = decide(state, event)
        _log_transition(order_id, event, state, decision)
        state, send = decision.state, send + list(decision.send)
    if not recorded:
        return []
    return saga_store.store(conn, order, saga.Decision(state, tuple(send)))


def decide(state: saga.SagaState, event: Event) -> saga.Decision:
    succeeded_before = event.step in state.succeeded
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
    if event.status == saga.DEAD_LETTERED:
        return saga.on_dead_letter(state)
    return saga.on_retrying(state, event.step, event.reason)


def _log_transition(order_id: str, event: Event, before: saga.SagaState,
                    decision: saga.Decision) -> None:
    after = decision.state
    fields = {"order_id": order_id, "event": f"{event.step}:{event.status}", "status": after.status,
              "reason": after.reason, "send": list(decision.send)}
    if after.needs_attention and not before.needs_attention:
        log.error("needs attention %s", json.dumps(fields))
    elif before.status != after.status or decision.send:
        log.info("saga %s", json.dumps(fields))
