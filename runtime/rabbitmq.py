"""RabbitMQ as the broker, done the way its users expect (docs/celery-notes.md, "RabbitMQ").

- Every queue of ours is a durable quorum queue, bound to one topic exchange (`saga.tasks`):
  Celery's native delayed delivery, which a retry's countdown needs on quorum queues, skips
  direct exchanges. Every process declares the same queues with the same arguments (RabbitMQ
  refuses a declare whose arguments differ: 406 PRECONDITION_FAILED).
- What the broker gives up on goes to a real dead-letter exchange (`saga.dead`, direct), each
  queue's to its own dead queue (`payment.dead`): a message delivered DELIVERY_LIMIT times
  without being acked (the poison a worker dies on; Redis keeps no such count, so there the
  guard counts), and what a worker rejects because it is no task it can run (junk, an unknown
  task: runtime.consumer).
- Each worker drains its own queue's dead queue into its dead letters (runtime.deadletters):
  listed, reported to the saga and re-driven just as on Redis. The drain never runs a message.
- Publisher confirms are on: a publish returns once RabbitMQ has the message."""
import json
import logging
import math
import threading
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from kombu import Exchange
from kombu import Queue as KombuQueue

from contracts.messages import order_id_of
from contracts.names import Queue
from runtime.retries import backoff_s

if TYPE_CHECKING:
    from runtime.deadletters import DeadLetterSink

log = logging.getLogger("saga.deadletters")

TASKS = Exchange("saga.tasks", type="topic", durable=True)
DEAD = Exchange("saga.dead", type="direct", durable=True)
# deliveries without an ack before a message is dead-lettered: a worker that stops hands back
# what it holds and that counts too (RabbitMQ 3.10+), hence more than the guard's 5 on Redis
DELIVERY_LIMIT = 10
SOCKET_BOUNDS = {"read_timeout": 5, "write_timeout": 5}
HEARTBEAT_S = 10  # the drain's connection: a half-open one is found within two beats


class TaskQueue(KombuQueue):
    """A queue of ours, declared with its dead queue: RabbitMQ drops what it dead-letters to an
    exchange with no queue bound, so the dead queue must exist before anything can die, whoever
    declares first (a worker starting, the API's first publish)."""

    def declare(self, nowait: bool = False, channel: Any = None) -> Any:
        dead_queue(self.name)(channel or self.channel).declare(nowait=nowait)
        return super().declare(nowait=nowait, channel=channel)


def task_queue(name: str) -> KombuQueue:
    return TaskQueue(name, TASKS, routing_key=name, durable=True, queue_arguments={
        "x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD.name,
        # explicit: a message that came back through delayed delivery carries a routing key
        # of its own (`0.0.1.payment`), which the dead queue's binding would not match
        "x-dead-letter-routing-key": name,
        # a quorum queue dead-letters at least once only with these two
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})


def dead_queue(name: str) -> KombuQueue:
    return KombuQueue(f"{name}.dead", DEAD, routing_key=name, durable=True,
                      queue_arguments={"x-queue-type": "quorum"})


def settings() -> dict[str, Any]:
    """Celery's settings for RabbitMQ, the same in every process."""
    return {
        "task_queues": [task_queue(name) for name in Queue.ALL],
        "task_default_exchange": TASKS.name,
        "task_default_exchange_type": "topic",
        "task_default_queue_type": "quorum",
        "task_create_missing_queues": False,  # a queue of ours is declared with its arguments
        "broker_native_delayed_delivery_queue_type": "quorum",
        "worker_detect_quorum_queues": True,  # quorum queues refuse a global QoS
        # a hung or blocked RabbitMQ (a memory or disk alarm blocks publishers) must not hang
        # us: a read (the publish's confirm included) or write that waits longer raises, and the
        # publish's retry policy or the outbox takes it from there
        "broker_transport_options": {"confirm_publish": True, **SOCKET_BOUNDS},
    }


def whole_seconds(countdown: float | None) -> float | None:
    """Native delayed delivery counts in whole seconds and refuses less than one (Celery 5.7
    raises "countdown must be a positive number" for 0.5): a countdown is rounded up."""
    return float(math.ceil(countdown)) if countdown else countdown


def death(headers: dict[str, Any], queue: str) -> str:
    """Why RabbitMQ dead-lettered a message of `queue`, in words, from its x-death entry for that
    queue (not for the delayed-delivery queues it may have passed through)."""
    for entry in headers.get("x-death") or ():
        if entry.get("queue") == queue:
            reason, count = entry.get("reason"), entry.get("count")
            if reason == "delivery_limit":
                return (f"poison: delivered {DELIVERY_LIMIT}+ times and never finished "
                        f"(x-delivery-limit of queue {queue})")
            if reason == "rejected":
                return (f"rejected by the {queue} worker: no task it can run (undecodable, "
                        "unknown or invalid; its log says which)")
            return f"dead-lettered by RabbitMQ from queue {queue}: {reason} (x{count})"
    return f"dead-lettered by RabbitMQ from queue {queue}"


def dead_letter_of(body: Any, headers: dict[str, Any],
                   queue: str) -> tuple[str, str | None, Any, str]:
    """(task, order id, payload, error) of a dead-lettered message, as a dead letter is kept:
    a task message's only argument is its payload (what a re-drive sends again)."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    task = str(headers.get("task") or "<not a task message>")
    payload: Any = raw
    try:
        args = json.loads(raw)[0] if headers.get("task") else None
        if isinstance(args, list) and len(args) == 1:
            payload = args[0]
    except (ValueError, TypeError, KeyError, IndexError):
        pass
    return task, order_id_of(payload), payload, death(headers, queue)


DRAIN_RETRY_S = 5.0


def drain(app: Any, queue: str, dead_letters: "DeadLetterSink",
          stopping: threading.Event) -> None:
    """Move what RabbitMQ dead-lettered from `queue` into `dead_letters` until `stopping`,
    acking each once it is kept, through broker outages. A dead letter is never handed back to
    its dead queue (each hand-back would count as a delivery): while the database is away it is
    kept unacked and stored again in place; one that cannot be stored as it is (a field too
    long for its column) is recorded cut down, or at least logged whole, then acked."""
    # here, not at the top: an app that keeps no database (the bench's bare chain) loads none
    from runtime.db import database_trouble

    def keep(message: Any) -> None:
        task, order_id, payload, error = dead_letter_of(message.body, message.headers or {},
                                                        queue)
        attempt = 0
        while True:
            try:
                dead_letters.store(task, order_id, payload, error)
                break
            except Exception as exc:
                if not database_trouble(exc):
                    dead_letters.record(task[:128], order_id if order_id and
                                        len(order_id) <= 64 else None, payload, error)
                    break
                if stopping.is_set():
                    return  # unacked: back on its dead queue when this connection closes
                log.warning("dead letter of queue %s waits for its database: %s", queue,
                            type(exc).__name__)
                stopping.wait(backoff_s(0.5, attempt, jitter=True))
                attempt += 1
        message.ack()

    while not stopping.is_set():
        try:
            # on_message: kombu hands the raw message over, never decoding the body
            with app.connection_for_read(heartbeat=HEARTBEAT_S) as connection, \
                    connection.Consumer([dead_queue(queue)], on_message=keep,
                                        prefetch_count=10, accept=None):
                while not stopping.is_set():
                    try:
                        connection.drain_events(timeout=1)
                    except TimeoutError:
                        connection.heartbeat_check()  # raises once the broker stopped beating
        except Exception as exc:  # the broker away: the next round
            log.warning("draining %s.dead failed: %s: %s", queue, type(exc).__name__, exc)
            stopping.wait(DRAIN_RETRY_S)


def drain_step(queue: str, dead_letters: "DeadLetterSink") -> type[bootsteps.StartStopStep]:
    """A worker bootstep: `drain`, in a thread of the worker's main process."""
    stopping = threading.Event()

    class DeadQueueDrain(bootsteps.StartStopStep):
        def start(self, parent: Any) -> None:
            threading.Thread(target=drain, args=(parent.app, queue, dead_letters, stopping),
                             name="dead-queue-drain", daemon=True).start()

        def stop(self, parent: Any) -> None:
            stopping.set()

        def terminate(self, parent: Any) -> None:
            stopping.set()

    return DeadQueueDrain
