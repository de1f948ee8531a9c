"""The Celery app every process builds, with the settings they must all share. Redis keeps no
delivery count and no dead-letter exchange, so these are the settings that make delivery
at-least-once (see docs/celery-notes.md)."""
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Celery

from contracts.names import Queue, queue_of
from runtime import rabbitmq
from runtime.broker import Broker
from runtime.guard import Guard, RedisGuard, Unguarded, broker_client
from runtime.reply_stream import CeleryReplies, Replies, ReplyStream
from runtime.retries import PATIENT_PUBLISH
from runtime.transport import SagaAMQP, transport_for

if TYPE_CHECKING:
    from runtime.deadletters import DeadLetterSink
    from runtime.metrics import WorkerMetrics
    from runtime.step import SagaStep

# A message a worker took but did not ack comes back after this many seconds. It must exceed the
# longest task plus the longest retry countdown (runtime.retries.MAX_RETRY_COUNTDOWN_S), or a
# healthy task runs twice; and every app on one Redis DB must use the same value (the shortest
# wins).
VISIBILITY_TIMEOUT_S = 600


# A broker that hangs or is cut off must not hang us. Every synchronous command (a publish, an
# ack) gives up after socket_timeout and is retried by its policy; connecting, after
# socket_connect_timeout. Consuming is not bounded by these (kombu's BRPOP waits in the event
# loop): kombu drops a BRPOP whose reply is overdue by health_check_interval and reconnects, and
# TCP keepalives find a peer that is gone while the connection idles.
BROKER_SOCKET_BOUNDS: dict[str, Any] = {
    "socket_timeout": 5, "socket_connect_timeout": 3, "socket_keepalive": True,
    "health_check_interval": 10}


class SagaApp(Celery):
    """A Celery app that knows where its process keeps dead letters and how it guards a
    delivery: set once by the composition root, read by the tasks, the consumer and the
    transport of this app (never through a module-level global)."""

    dead_letters: "DeadLetterSink"
    guard: Guard
    replies: Replies  # how a step's reply reaches the saga (runtime.reply_stream)
    worker_metrics: "WorkerMetrics | None" = None  # set by its bootstep, in a worker only
    # on RabbitMQ: what cannot be run goes to its dead-letter exchange (runtime.rabbitmq), and a
    # countdown is in whole seconds
    dead_letter_exchange = False

    def send_task(self, *args: Any, **options: Any) -> Any:
        if self.dead_letter_exchange and options.get("countdown"):
            options["countdown"] = rabbitmq.whole_seconds(options["countdown"])
        return super().send_task(*args, **options)

    def step(self, name: str, **options: Any) -> Callable[[Callable[..., Any]], "SagaStep"]:
        """Declare a saga step of this app, and of this app only (Celery would otherwise add
        it to every app finalized later in the process), created at once so that a wrong
        option fails here. The options are SagaStep's and celery.Task's."""
        # imported here: an app that declares no step (the benchmark's bare chain) loads no
        # database code and no message models
        from runtime.step import SagaStep
        declare: Callable[[Callable[..., Any]], SagaStep] = self.task(
            name=name, base=SagaStep, shared=False, lazy=False, **options)
        return declare


def route_by_namespace(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
                       **kw: Any) -> dict[str, str] | None:
    try:
        return {"queue": queue_of(name)}
    except ValueError:
        return None


def make_app(main: str, broker: Broker | str, dead_letters: "DeadLetterSink") -> SagaApp:
    """The app of one process on `broker` (a URL: a Redis one, or `memory://` for a unit
    test)."""
    if isinstance(broker, str):
        broker = Broker(broker)
    app = SagaApp(main, broker=broker.url, set_as_current=False, amqp=SagaAMQP)
    app.dead_letters = dead_letters
    if broker.on_redis:
        client = broker_client(broker)
        app.guard, app.replies = RedisGuard(client), ReplyStream(client)
        # junk on a queue is dead-lettered instead of ending the worker (transport.py)
        app.conf.broker_transport = transport_for(dead_letters, sentinel=broker.kind == "sentinel")
    else:
        app.guard, app.replies = Unguarded(), CeleryReplies(app)
    app.conf.update(
        worker_consumer="runtime.consumer:DeadLetteringConsumer",
        task_publish_retry_policy=PATIENT_PUBLISH,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S,
                                  **BROKER_SOCKET_BOUNDS, **broker.transport_options()},
        task_routes=(route_by_namespace,),
        task_create_missing_queues=True,
        task_default_queue=Queue.SAGA if main == "saga" else "celery",
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    if broker.kind == "amqp":
        app.conf.update(rabbitmq.settings())
        app.dead_letter_exchange = True
    return app


def quiet_celery_task_lines(**_: Any) -> None:
    # Every step logs one structured line of its own (order id, outcome, attempt, duration);
    # Celery's two INFO lines per task ("received", "succeeded in") only repeat it, at a cost
    # on every message. Its warnings and errors (retries given up, crashes) still show.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
