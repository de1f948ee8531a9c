"""GET /orders/{id}/events: an order's timeline as Server-Sent Events, as it is recorded. Each
entry is one `event: step` (its `id` is the entry's, so a client that reconnects with
Last-Event-ID misses nothing), then one `event: end` with the order's terminal status once the
saga owes it nothing more, and the stream closes. The database is read every POLL_S, off the
event loop; a comment line keeps idle connections open through proxies."""
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from orchestrator.models import Order, SagaEvent

POLL_S = 0.25
KEEPALIVE_S = 15.0


def _read(sessions: "sessionmaker[Session]", order_id: str,
          after: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The entries after `after`, and the order's end ({status, reason}) once it is closed."""
    with sessions() as session:
        order = session.get(Order, order_id)
        entries = session.scalars(select(SagaEvent).where(
            SagaEvent.order_id == order_id, SagaEvent.id > after).order_by(SagaEvent.id))
        found = [{"id": e.id, "name": e.name, "status": e.status, "at": e.at.isoformat(),
                  "attempt": e.attempt, "reason": e.reason, "detail": e.detail}
                 for e in entries]
        end = None
        if order is not None and order.closed:
            end = {"status": order.status, "reason": order.reason,
                   "needs_attention": order.needs_attention}
    return found, end


async def stream(sessions: "sessionmaker[Session]", order_id: str,
                 after: int = 0) -> AsyncIterator[str]:
    quiet_since = time.monotonic()
    while True:
        found, end = await run_in_threadpool(_read, sessions, order_id, after)
        for entry in found:
            after = entry["id"]
            yield f"id: {after}\nevent: step\ndata: {json.dumps(entry, default=str)}\n\n"
        if end is not None:
            yield f"event: end\ndata: {json.dumps(end)}\n\n"
            return
        if found:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": still running\n\n"
        await asyncio.sleep(POLL_S)
