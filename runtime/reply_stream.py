"""How a step's reply reaches the saga. On Redis, a stream the saga worker reads in batches; on
any other broker, a Celery message to the saga's queue (task `saga.step_result`).

Why a stream: a reply sent as a Celery message cost about as much as the step's own work (on
the step's side the publish, on the saga's the BRPOP, the unacked bookkeeping, the request, the
pool and the ack: ten Redis commands and ~3 ms of CPU, measured in `make bench`). On a stream a
reply is one XADD; the saga worker takes up to a batch of them with one XREADGROUP, applies them
in one transaction and acknowledges them with one XACK after the commit. It stays at-least-once:
an entry read and not acknowledged (the saga worker died, its database was away) stays pending
for that consumer, is read again, and is claimed by another saga worker once idle for
CLAIM_IDLE_S. Applying a reply twice is harmless (orchestrator/replies.py)."""
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import redis

from contracts.names import Queue, Task
from runtime.headers import brief

if TYPE_CHECKING:
    from celery import Celery

STREAM = "saga:replies"
GROUP = "saga"
CLAIM_IDLE_S = 60  # past any batch's apply: an entry pending this long has lost its reader


class Replies(Protocol):
    def send(self, reply: dict[str, Any], order_id: str, trace: dict[str, str]) -> None: ...


class CeleryReplies:
    """Each reply a Celery message to queue `saga`, applied by the task `saga.step_result`."""

    def __init__(self, app: "Celery") -> None:
        self.app = app

    def send(self, reply: dict[str, Any], order_id: str, trace: dict[str, str]) -> None:
        # Celery's instrumentation carries the trace in the message headers itself
        self.app.send_task(Task.STEP_RESULT, args=(reply,), queue=Queue.SAGA, **brief(order_id))


Entry = tuple[str, dict[str, str]]  # an entry id and its fields


class ReplyStream:
    """The replies' stream on the broker's Redis: steps add to it, saga workers read it as one
    consumer group. `client` decodes responses (str)."""

    def __init__(self, client: "redis.Redis") -> None:
        self.client = client

    def send(self, reply: dict[str, Any], order_id: str, trace: dict[str, str]) -> None:
        # the trace context rides with the reply, as it would in a Celery message's headers
        fields: dict[Any, Any] = {"reply": json.dumps(reply), "order_id": order_id, **trace}
        self.client.xadd(STREAM, fields)

    def join(self) -> None:
        """Create the consumer group if it is not there, reading from the stream's start: replies
        sent before any saga worker ever ran are not skipped."""
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int, pending: bool) -> list[Entry]:
        """Up to `count` entries: this consumer's own pending ones (read, never acknowledged)
        when `pending`, else new ones, waiting up to `block_ms` for the first."""
        answer: Any = self.client.xreadgroup(GROUP, consumer, {STREAM: "0" if pending else ">"},
                                             count=count, block=None if pending else block_ms)
        read = [(entry_id, fields) for _, entries in answer or () for entry_id, fields in entries]
        self.done([entry_id for entry_id, fields in read if not fields])  # deleted meanwhile
        return [(entry_id, fields) for entry_id, fields in read if fields]

    def done(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge the entries (after their commit) and drop them from the stream."""
        if entry_ids:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.xack(STREAM, GROUP, *entry_ids)
                pipe.xdel(STREAM, *entry_ids)
                pipe.execute()

    def keep(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Say these pending entries are still being worked on (their idle time starts again;
        their delivery count stays), so that no other consumer claims them."""
        if entry_ids:
            self.client.xclaim(STREAM, GROUP, consumer, 0, list(entry_ids), justid=True)

    def claim(self, consumer: str, count: int = 500) -> int:
        """Take over entries another consumer read and left pending for CLAIM_IDLE_S (its saga
        worker died); they become this consumer's pending ones. Returns how many."""
        answer: Any = self.client.xautoclaim(STREAM, GROUP, consumer, CLAIM_IDLE_S * 1000,
                                             "0-0", count=count, justid=True)
        return len(answer or ())  # with justid, redis-py answers the claimed ids

    def deliveries(self, entry_ids: Sequence[str]) -> dict[str, int]:
        """How many times each pending entry was read."""
        if not entry_ids:
            return {}
        first, last = min(entry_ids, key=_key), max(entry_ids, key=_key)
        pending: Any = self.client.xpending_range(STREAM, GROUP, first, last, len(entry_ids) * 2)
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    def waiting(self) -> int:
        """Entries not yet applied (read or not): the stream holds nothing else."""
        length: Any = self.client.xlen(STREAM)
        return int(length)


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
