"""The saga worker's reader of the replies' stream (runtime/reply_stream.py): a thread of the
saga worker's main process that takes the steps' replies in batches, applies a batch in one
transaction, acknowledges it after the commit, then publishes what the batch owed.

Nothing is lost and nothing is applied half: an entry is acknowledged only once its reply is
committed (or kept as a dead letter). The saga's database away: the batch is applied again,
with backoff, until it goes in. A batch that raises anything else is applied one reply per
transaction, and the reply that still raises is dead-lettered. Entries this consumer read
before it died are read again at its start, one at a time: one read more than MAX_DELIVERIES
times (it kept killing the saga worker) is dead-lettered rather than read for ever."""
import json
import logging
import threading
import time
from typing import Any

from celery import bootsteps
from pydantic import ValidationError

from contracts.messages import StepReply
from contracts.names import Task
from orchestrator import outbox, replies
from runtime import tracing
from runtime.celery_app import SagaApp
from runtime.db import Database, database_trouble
from runtime.guard import MAX_DELIVERIES
from runtime.reply_stream import Entry, ReplyStream
from runtime.retries import backoff_s

log = logging.getLogger("saga.replies")

BATCH = 100  # replies per transaction, at most
BLOCK_MS = 1000  # how long one read waits for a reply (the stop flag is looked at between reads)
CLAIM_EVERY_S = 15.0


class ReplyReader:
    def __init__(self, app: SagaApp, db: Database, stream: ReplyStream, consumer: str) -> None:
        self.app, self.db, self.stream, self.consumer = app, db, stream, consumer
        self.settled: set[str] = set()  # entries of the batch in hand dead-lettered already

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: read, apply, acknowledge, publish. Never raises: trouble with Redis or
        the database is waited out."""
        pending, claim_at, failures = True, 0.0, 0
        while not stop.is_set():
            try:
                if time.monotonic() >= claim_at:
                    self.stream.join()
                    pending = self.stream.claim(self.consumer) > 0 or pending
                    claim_at = time.monotonic() + CLAIM_EVERY_S
                # after a restart or a claim: what was read and never acknowledged, one by one
                entries = self.stream.read(self.consumer, 1 if pending else BATCH, BLOCK_MS,
                                           pending)
                if pending and not entries:
                    pending = False
                elif pending:
                    entries = self._poison_out(entries)
                failures = 0
            except Exception as exc:
                failures += 1
                claim_at = 0.0  # join again first: Redis may have come back empty (NOGROUP)
                log.warning("replies not read (%s: %s); trying again", type(exc).__name__, exc)
                stop.wait(backoff_s(0.5, failures, jitter=True))
                continue
            if not entries:
                continue
            owed = self._apply(entries, stop)
            if owed is None:
                return  # stopping: the entries stay pending, read again at the next start
            try:
                outbox.flush(self.app, self.db, owed)
            except Exception:  # applied: what it owes stays owed for the relay
                log.exception("publishing after %d replies failed; left to the relay", len(owed))

    def _apply(self, entries: list[Entry], stop: threading.Event) -> list[int] | None:
        """Apply the entries and acknowledge them; the outbox rows they owe. Database trouble
        (or Redis away for the acknowledgement) is retried until `stop` (then None)."""
        attempt, owed, self.settled = 0, None, set()
        ids = [entry_id for entry_id, _ in entries]
        while True:
            try:
                if owed is None:  # once committed, only the acknowledgement is tried again
                    owed = self._together([e for e in entries if e[0] not in self.settled])
                self.stream.done(ids)
                return owed
            except Exception as exc:
                if stop.is_set():
                    return None
                attempt += 1
                wait = backoff_s(0.5, attempt, jitter=True)
                log.warning("%d replies not applied, trying again in %.1fs: %s: %s",
                            len(entries), wait, type(exc).__name__, str(exc).splitlines()[0])
                try:  # still ours: another saga worker must not claim them as abandoned
                    self.stream.keep(self.consumer, ids)
                except Exception:
                    pass  # Redis away too: they are claimed only after CLAIM_IDLE_S anyway
                if stop.wait(wait):
                    return None

    def _together(self, entries: list[Entry]) -> list[int]:
        """One transaction for the batch; if it raises other than for database trouble, one per
        reply, dead-lettering the reply that raises on its own."""
        batch = [parsed for entry in entries if (parsed := self._parse(entry)) is not None]
        if not batch:
            return []  # all junk, kept as dead letters
        # the orders' rows locked in one order by every batch: two saga workers never deadlock
        batch.sort(key=lambda one: one[1].order_id)
        try:
            return self._transaction(batch)
        except Exception as exc:
            if database_trouble(exc):
                raise
            log.warning("a batch of %d replies raised (%s: %s): one at a time", len(batch),
                        type(exc).__name__, exc)
        owed: list[int] = []
        for one in batch:
            try:
                owed += self._transaction([one])
            except Exception as exc:
                if database_trouble(exc):
                    raise
                entry_id, reply, _ = one
                log.exception("reply for order_id=%s raised; dead-lettered", reply.order_id)
                self._dead_letter(entry_id, reply.order_id, reply.model_dump(mode="json"),
                                  repr(exc))
        return owed

    def _transaction(self, batch: list[tuple[str, StepReply, dict[str, str]]]) -> list[int]:
        owed: list[int] = []
        took: list[float] = []
        with self.db.engine.begin() as conn:
            for _, reply, fields in batch:
                with tracing.run_span(f"run/{Task.STEP_RESULT}", reply.order_id, fields):
                    began = time.monotonic()
                    owed += replies.apply_reply(conn, reply)
                    took.append(time.monotonic() - began)
        _count(self.app, took)  # once committed
        return owed

    def _parse(self, entry: Entry) -> tuple[str, StepReply, dict[str, str]] | None:
        """The entry's reply, or None once its junk is kept as a dead letter."""
        entry_id, fields = entry
        raw = fields.get("reply", "")
        try:
            return entry_id, StepReply.model_validate_json(raw), fields
        except ValidationError as exc:
            self._dead_letter(entry_id, fields.get("order_id"), _json_or_text(raw), str(exc))
            return None

    def _poison_out(self, entries: list[Entry]) -> list[Entry]:
        counts = self.stream.deliveries([entry_id for entry_id, _ in entries])
        kept = []
        for entry_id, fields in entries:
            if counts.get(entry_id, 0) <= MAX_DELIVERIES:
                kept.append((entry_id, fields))
                continue
            self._dead_letter(entry_id, fields.get("order_id"),
                              _json_or_text(fields.get("reply", "")),
                              f"read {counts[entry_id]} times without being applied: a poison "
                              "reply?")
        return kept

    def _dead_letter(self, entry_id: str, order_id: str | None, payload: Any,
                     error: str) -> None:
        """Keep it (raises while the database is away: the entry stays to try again), then
        acknowledge it at once, and leave it out of any retry of its batch (kept once)."""
        self.app.dead_letters.store(Task.STEP_RESULT, order_id, payload, error)
        self.settled.add(entry_id)
        self.stream.done([entry_id])


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _count(app: SagaApp, took: list[float]) -> None:
    """Each reply applied, counted and timed in the worker's metrics like a task of the saga
    worker's."""
    metrics = app.worker_metrics
    if metrics is None:
        return
    for seconds in took:
        metrics.received.labels(Task.STEP_RESULT).inc()
        metrics.task_seconds.labels(Task.STEP_RESULT, "succeeded").observe(seconds)


def reader_step(app: SagaApp, db: Database) -> type[bootsteps.StartStopStep]:
    """A worker bootstep: on a Redis broker, the saga worker reads the replies' stream from a
    thread of its main process, as one consumer named after the worker (its hostname)."""
    stopping = threading.Event()

    class Replies(bootsteps.StartStopStep):
        def start(self, parent: Any) -> None:
            if not isinstance(app.replies, ReplyStream):
                return  # the replies come as Celery messages (saga.step_result)
            reader = ReplyReader(app, db, app.replies, parent.hostname)
            threading.Thread(target=reader.run, args=(stopping,), name="reply-reader",
                             daemon=True).start()

        def stop(self, parent: Any) -> None:
            stopping.set()

        def terminate(self, parent: Any) -> None:
            stopping.set()

    return Replies
