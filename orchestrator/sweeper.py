"""Recovery that does not depend on any message arriving: errbacks are best-effort and Redis may
lose what it held. Sagas that stalled are driven again, or compensated past their deadline."""
import logging
from datetime import timedelta

from sqlalchemy import Engine, select

from orchestrator import saga
from orchestrator.saga_store import ORDERS, lock, seen, state_of, store
from runtime.db import utcnow

log = logging.getLogger("saga.sweeper")
MAX_DOUBLINGS = 4  # at most 16 step deadlines between two re-drives of one order


def sweep(db: Engine, step_deadline_s: float, saga_deadline_s: float,
          limit: int = 200) -> list[int]:
    """Returns the outbox rows to publish."""
    cutoff = utcnow() - timedelta(seconds=step_deadline_s)
    with db.begin() as conn:
        stalled = list(conn.scalars(
            select(ORDERS.c.id).where(ORDERS.c.closed.is_(False),
                                      ORDERS.c.needs_attention.is_(False),
                                      ORDERS.c.updated_at < cutoff)
            .order_by(ORDERS.c.updated_at).limit(limit)))
    owed: list[int] = []
    for order_id in stalled:
        with db.begin() as conn:
            order = lock(conn, order_id)
            if order is None or order.closed or order.updated_at >= cutoff:
                continue  # it moved on meanwhile, or another sweeper took it
            # each re-drive of an order waits twice as long as the last: on a backlog, more
            # copies of the same messages would only deepen it
            patience = step_deadline_s * 2 ** min(order.redrives, MAX_DOUBLINGS)
            if utcnow() - order.updated_at < timedelta(seconds=patience):
                continue
            age_s = (utcnow() - order.created_at).total_seconds()
            before = state_of(order, seen(conn, order_id))
            decision = saga.redrive(before, age_s, saga_deadline_s)
            owed += store(conn, order, decision, redrives=order.redrives + 1)
            log.warning("stalled order_id=%s status=%s idle_s>%.0f redrive=%d send=%s%s",
                        order_id, before.status, step_deadline_s, order.redrives + 1,
                        list(decision.send),
                        " (saga deadline passed: compensating)"
                        if decision.state.reason == "timed_out" and not before.reason else "")
    return owed
