"""Fakes for what we own, and a Celery app on kombu's in-memory transport, so that a step runs
in the test's own process exactly as a worker's tracer would call it."""
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from runtime.celery_app import SagaApp, make_app
from runtime.guard import Busy, Delivery


@dataclass
class FakeDeadLetters:
    letters: list[dict[str, Any]] = field(default_factory=list)

    database_away: bool = False  # store() raises, as the real one does then

    def store(self, task: str, order_id: str | None, payload: Any, error: str) -> None:
        if self.database_away:
            raise OperationalError("INSERT INTO dead_letters", {}, Exception("connection refused"))
        self.letters.append({"task": task, "order_id": order_id, "payload": payload,
                             "error": error})

    def record(self, task: str, order_id: str | None, payload: Any, error: str) -> None:
        try:
            self.store(task, order_id, payload, error)
        except OperationalError:
            pass  # the real one logs it whole


@dataclass
class FakeGuard:
    """Says this delivery is the `deliveries`-th of its message, or that another runs (busy)."""

    deliveries: int = 1
    busy: bool = False
    held: list[tuple[str, str | None, str]] = field(default_factory=list)

    @contextmanager
    def hold(self, delivery: str, order_id: str | None, step: str) -> Iterator[Delivery]:
        self.held.append((delivery, order_id, step))
        if self.busy:
            raise Busy(f"another delivery of {step} for {order_id} is still running")
        yield Delivery(self.deliveries, locked=order_id is not None)


def memory_app(dead_letters: FakeDeadLetters) -> SagaApp:
    """An app like every process's, on kombu's in-memory transport (one per test process),
    emptied of what an earlier test left in it."""
    app = make_app("unit", "memory://", dead_letters)
    app.guard = FakeGuard()
    for queue in ("saga", "payment", "inventory", "notify"):
        drain(app, queue)
    return app


def deliver(task: Task[Any, Any], payload: Any, retries: int = 0,
            chain: list[dict[str, Any]] | None = None) -> Any:
    """Run the task on one delivery of `payload`, as the worker's tracer does: the request
    pushed (which retry this is, the rest of the chain), then the task called."""
    task.push_request(id=f"test:{task.name}", args=(payload,), kwargs={}, retries=retries,
                      called_directly=False,
                      hostname="unit@test", chain=chain,
                      delivery_info={"exchange": "", "routing_key": task.name.split(".")[0]})
    try:
        return task(payload)
    finally:
        task.pop_request()


def drain(app: SagaApp, queue: str) -> list[dict[str, Any]]:
    """Every message waiting on `queue`, taken off it: [{"task", "args", "headers"}]."""
    taken = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(block=False)
            except simple.Empty:
                break
            message.ack()
            args, _kwargs, _embed = message.payload
            taken.append({"task": message.headers["task"], "args": args,
                          "headers": message.headers})
        simple.close()
    return taken


def replies(app: SagaApp) -> list[dict[str, Any]]:
    """The replies the saga would receive, in order."""
    return [m["args"][0] for m in drain(app, "saga")]
