"""The Celery settings every app must share. Redis keeps no delivery count and no dead-letter
exchange, so these are the settings that make delivery at-least-once (see CELERY_NOTES.md)."""
import logging
from typing import Any

from celery import Celery

from contracts.names import Queue, queue_of

# A message a worker took but did not ack comes back after this many seconds. It must exceed the
# longest task plus the longest retry countdown (MAX_RETRY_COUNTDOWN_S), or a healthy task runs
# twice; and every app on one Redis DB must use the same value (the shortest wins).
VISIBILITY_TIMEOUT_S = 600
MAX_RETRY_COUNTDOWN_S = 60


def route_by_namespace(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
                       **kw: Any) -> dict[str, str] | None:
    try:
        return {"queue": queue_of(name)}
    except ValueError:
        return None


# Publishing (a reply, the next step) waits out a Redis restart rather than failing the task.
PATIENT_PUBLISH = {"max_retries": 30, "interval_start": 0, "interval_step": 0.5,
                   "interval_max": 2}


def brief(order_id: str | None) -> dict[str, str]:
    """Options for send_task/signature that name the order instead of the payload: Celery
    otherwise renders the whole payload with saferepr into every message's headers (argsrepr),
    which costs more than sending it; logs and monitors still see which order it is."""
    return {"argsrepr": f"(<order {order_id}>,)", "kwargsrepr": "{}"}


def make_app(main: str, broker_url: str) -> Celery:
    app = Celery(main, broker=broker_url, set_as_current=False)
    if broker_url.startswith("redis://"):
        # junk on a queue is dead-lettered instead of ending the worker (transport.py)
        app.conf.broker_transport = "contracts.runtime.transport:Transport"
    app.conf.update(
        worker_consumer="contracts.runtime.consumer:DeadLetteringConsumer",
        task_publish_retry_policy=PATIENT_PUBLISH,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        task_routes=(route_by_namespace,),
        task_create_missing_queues=True,
        task_default_queue=Queue.SAGA if main == "saga" else "celery",
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app


def quiet_celery_task_lines(**_: Any) -> None:
    # Every step logs one structured line of its own (order id, outcome, attempt, duration);
    # Celery's two INFO lines per task ("received", "succeeded in") only repeat it, at a cost
    # on every message. Its warnings and errors (retries given up, crashes) still show.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
