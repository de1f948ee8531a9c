"""Where a worker puts every message it cannot process. Celery drops some of them quietly (an
undecodable body is acked, an unknown task rejected) and Redis has no dead-letter exchange, so
each service registers its own store here and the hooks below feed it."""
import json
import logging
from collections.abc import Callable
from typing import Any

from celery.signals import task_failure

log = logging.getLogger("saga.deadletters")

Sink = Callable[[str, "str | None", Any, str], None]  # (task, order_id, payload, error)
_sink: list[Sink] = []


def set_sink(sink: Sink) -> None:
    _sink[:] = [sink]


def record(task: str, order_id: str | None, payload: Any, error: str) -> None:
    """Never raises: a dead letter that cannot be stored is at least logged whole."""
    try:
        if not _sink:
            raise RuntimeError("no dead-letter store registered in this process")
        _sink[0](task, order_id, payload, error)
    except Exception:
        log.exception("could not store dead letter task=%s order_id=%s error=%s payload=%s",
                      task, order_id, error, json.dumps(payload, default=repr)[:2000])


@task_failure.connect
def _on_task_failure(sender: Any = None, task_id: str | None = None, exception: Any = None,
                     args: Any = None, kwargs: Any = None, **_: Any) -> None:
    # A task that raised (wrong arguments, a bug, a database gone for good): its errback tells
    # the saga; the message itself is kept here so it can be looked at and re-driven.
    from contracts.runtime.step import order_id_of  # step imports this module
    payload = args[0] if args and len(args) == 1 else {"args": args, "kwargs": kwargs}
    record(getattr(sender, "name", "?"), order_id_of(payload), payload,
           f"{type(exception).__name__}: {exception}")
