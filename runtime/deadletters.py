"""Where a process keeps every message it cannot process. Celery drops some of them quietly (an
undecodable body is acked, an unknown task rejected) and Redis has no dead-letter exchange, so
each process keeps them in a table of its own database, to be listed and re-driven.

The store is the app's (`SagaApp.dead_letters`, set by the process's composition root); what
feeds it: a task that raised (`DeadLetteringTask.on_failure`), a step's payload that fails its
contract (`runtime.step`), and what the consumer and the transport cannot even decode
(`runtime.consumer`, `runtime.transport`)."""
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from celery import Task
from sqlalchemy import String, Text, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from contracts.messages import order_id_of
from contracts.names import queue_of
from runtime.db import UtcDateTime, utcnow

if TYPE_CHECKING:
    from runtime.celery_app import SagaApp

log = logging.getLogger("saga.deadletters")


class DeadLetterMixin:
    """A message this process could not process, kept with its error so it can be re-driven."""

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    retried_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # told to the saga (runtime.reporting), which lists every process's dead letters
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class DeadLetterSink(Protocol):
    def store(self, task: str, order_id: str | None, payload: Any, error: str) -> None: ...
    def record(self, task: str, order_id: str | None, payload: Any, error: str) -> None: ...


class LoggedOnly:
    """For a process that keeps no dead letters (a test's sender, a probe): each dead letter is
    logged whole, and kept nowhere else."""

    def store(self, task: str, order_id: str | None, payload: Any, error: str) -> None:
        _log_whole(task, order_id, payload, error)

    def record(self, task: str, order_id: str | None, payload: Any, error: str) -> None:
        _log_whole(task, order_id, payload, error)


def _log_whole(task: str, order_id: str | None, payload: Any, error: str) -> None:
    log.error("dead letter not stored task=%s order_id=%s error=%s payload=%s",
              task, order_id, error, json.dumps(payload, default=repr)[:2000])


class DeadLetters:
    """A process's dead letters, in its own database."""

    def __init__(self, sessions: "sessionmaker[Session]", model: type[DeadLetterMixin]) -> None:
        self.sessions, self.model = sessions, model

    def store(self, task: str, order_id: str | None, payload: Any, error: str) -> None:
        """Raises when the database is away: the caller keeps the message to try again."""
        with self.sessions.begin() as session:
            session.execute(insert(self.model), {
                "task": task, "order_id": order_id, "error": error,
                "payload": json.dumps(payload, default=repr), "created_at": utcnow()})
        log.warning(json.dumps({"order_id": order_id, "step": task, "outcome": "dead_lettered",
                                "error": error}, default=str))

    def record(self, task: str, order_id: str | None, payload: Any, error: str) -> None:
        """Never raises: where the message cannot be kept to try again (a task that raised),
        a dead letter that cannot be stored is at least logged whole."""
        try:
            self.store(task, order_id, payload, error)
        except Exception:
            log.exception("could not store a dead letter")
            _log_whole(task, order_id, payload, error)

    def unreported(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest dead letters not yet reported to the saga."""
        model = self.model
        with self.sessions.begin() as session:
            rows = session.scalars(select(model).where(model.reported_at.is_(None))
                                   .order_by(model.id).limit(limit))
            return [{"dead_letter_id": row.id, "task": row.task, "order_id": row.order_id,
                     "error": row.error, "created_at": row.created_at} for row in rows]

    def mark_reported(self, dead_letter_ids: list[int]) -> None:
        model = self.model
        with self.sessions.begin() as session:
            session.execute(update(model).where(model.id.in_(dead_letter_ids))
                            .values(reported_at=utcnow()))

    def list(self, include_retried: bool = False) -> Iterator[dict[str, Any]]:
        model = self.model
        with self.sessions.begin() as session:
            query = select(model).order_by(model.id)
            if not include_retried:
                query = query.where(model.retried_at.is_(None))
            for row in session.scalars(query):
                yield {"id": row.id, "task": row.task, "order_id": row.order_id,
                       "created_at": row.created_at.isoformat(), "error": row.error,
                       "payload": row.payload,
                       "retried_at": row.retried_at and row.retried_at.isoformat()}

    def redrive(self, dead_letter_id: int, send: Callable[[str, Any], None]) -> str:
        """Send a dead letter's payload to its task again; raises LookupError if there is
        nothing to re-drive. Returns the task it went to."""
        with self.sessions.begin() as session:
            row = session.get(self.model, dead_letter_id)
            if row is None:
                raise LookupError(f"no dead letter {dead_letter_id}")
            try:
                queue_of(row.task)
                payload = json.loads(row.payload)
            except ValueError:
                raise LookupError(f"dead letter {dead_letter_id} is not a message of ours "
                                  f"({row.task}): nothing to re-drive it to; it stays listed "
                                  "for the record") from None
            send(row.task, payload)
            row.retried_at = utcnow()
            return row.task


class DeadLetteringTask(Task[Any, Any]):
    """The base of every task of ours: a task that raised (wrong arguments, a bug, a database
    gone for good) keeps its message in its app's dead letters; its errback tells the saga."""

    app: "SagaApp"

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        payload = args[0] if args and len(args) == 1 else {"args": args, "kwargs": kwargs}
        self.app.dead_letters.record(self.name, order_id_of(payload), payload,
                                     f"{type(exc).__name__}: {exc}")
