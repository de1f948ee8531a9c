"""What every step does around its domain handler: check the payload at the door and dead-letter
what fails the contract, retry transient trouble with backoff, tell the saga what happened, log one
line, and stop the chain when the step failed for good."""
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from celery import Task as CeleryTask
from celery.utils.time import get_exponential_backoff_interval
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import sessionmaker

from contracts.messages import POISON, STUCK, StepReply, StepStatus
from contracts.names import Queue, Task
from contracts.runtime import deadletters
from contracts.runtime.app import MAX_RETRY_COUNTDOWN_S

log = logging.getLogger("saga.step")

# Redis keeps no delivery count: a message that kills its worker every time would come back
# forever. Past this many deliveries of the same attempt it is dead-lettered instead.
MAX_DELIVERIES = 5

# Two deliveries of one step at once (a duplicate, a redelivery racing the original) would both
# pass the inbox check and both send the e-mail. A lock per (order, step) makes the second wait,
# then find the first one's outcome in the inbox. The inbox stays what makes it correct; the lock
# only stops concurrent runs, and its lease frees it if the holder dies.
# A compensation or an e-mail that keeps failing for this many attempts is reported as stuck:
# the saga flags the order for a person, and the step keeps retrying.
ATTENTION_AFTER = 8

LOCK_LEASE_S = 30  # longer than any one run of a step (SMTP times out at 10 s)
LOCK_WAIT_S = 10

M = TypeVar("M", bound=BaseModel)


class StepOutcome(BaseModel):
    """A step's result as stored in its inbox and reported to the saga."""

    succeeded: bool
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] | None = None

    @classmethod
    def ok(cls, output: BaseModel | None = None, **detail: Any) -> "StepOutcome":
        dumped = None if output is None else output.model_dump(mode="json")
        return cls(succeeded=True, output=dumped, detail=detail)

    @classmethod
    def failed(cls, reason: str, **detail: Any) -> "StepOutcome":
        return cls(succeeded=False, reason=reason, detail=detail)


class RetryableError(Exception):
    """Trouble that may pass (a gateway timeout, an SMTP outage): retried with backoff."""

    #: the failure reason once the retries have run out
    exhausted_reason = "unavailable"


def order_id_of(payload: Any) -> str | None:
    """Best effort, for logs and dead letters of payloads that failed validation."""
    if not isinstance(payload, dict):
        return None
    candidate = payload.get("order_id")
    if candidate is None and isinstance(payload.get("order"), dict):
        candidate = payload["order"].get("order_id")
    return candidate if isinstance(candidate, str) else None


def log_step(**fields: Any) -> None:
    level = logging.WARNING if fields.get("outcome") in ("failed", "dead_lettered") else logging.INFO
    log.log(level, json.dumps(fields, default=str, sort_keys=False))


@dataclass(frozen=True)
class StepRunner:
    """One per service: where its dead letters go and how its retries back off."""

    session_factory: sessionmaker  # type: ignore[type-arg]
    dead_letter_model: type
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        deadletters.set_sink(self.dead_letter)

    def run(self, task: CeleryTask, payload: Any, schema: type[M],
            handler: Callable[[M], StepOutcome]) -> dict[str, Any] | None:
        started = time.monotonic()
        attempt = task.request.retries + 1
        order_id = order_id_of(payload)
        deliveries = count_delivery(task)
        try:
            if deliveries > MAX_DELIVERIES:
                error = f"delivered {deliveries} times without finishing: a poison message?"
                self.dead_letter(task.name, order_id, payload, error)
                return self.finish(task, order_id, attempt, started,
                                   StepOutcome.failed(POISON, deliveries=deliveries))
            return self._run(task, payload, schema, handler, order_id, attempt, started)
        finally:
            # this delivery finished, whatever its outcome: only those that die mid-run count
            forget_delivery(task)

    def _run(self, task: CeleryTask, payload: Any, schema: type[M],
             handler: Callable[[M], StepOutcome], order_id: str | None, attempt: int,
             started: float) -> dict[str, Any] | None:
        try:
            message = schema.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            self.dead_letter(task.name, order_id, payload, str(exc))
            outcome = StepOutcome.failed("invalid_message", errors=errors)
        else:
            try:
                with exclusive(task, order_id):
                    outcome = handler(message)
            except Busy as exc:
                # a duplicate: come back once the other delivery is done, whatever the budget
                log_step(order_id=order_id, step=task.name, outcome="busy", attempt=attempt)
                raise task.retry(exc=exc, countdown=LOCK_WAIT_S)
            except RetryableError as exc:
                budget = getattr(task, "retry_budget", None)  # None: for ever
                if budget is not None and task.request.retries >= budget:
                    outcome = StepOutcome.failed(exc.exhausted_reason, error=str(exc),
                                                 attempts=attempt)
                else:
                    raise self.retry(task, order_id, attempt, started, exc, None)
            except Exception as exc:
                if not getattr(task, "persistent", False):
                    raise  # the errback tells the saga, which compensates
                # a compensation or the e-mail never gives up; past a while a person is asked
                stuck = task.request.retries + 1 >= ATTENTION_AFTER
                raise self.retry(task, order_id, attempt, started, exc, STUCK if stuck else None)

        return self.finish(task, order_id, attempt, started, outcome)

    def retry(self, task: CeleryTask, order_id: str | None, attempt: int, started: float,
              exc: Exception, reason: str | None) -> Exception:
        countdown = get_exponential_backoff_interval(self.backoff_s, task.request.retries,
                                                     MAX_RETRY_COUNTDOWN_S)
        error = f"{type(exc).__name__}: {exc}"
        self.tell(task, order_id, "retrying", attempt, reason,
                  {"error": error, "retry_in_s": countdown})
        log_step(order_id=order_id, step=task.name, outcome="retrying", attempt=attempt,
                 duration_ms=_ms(started), error=error, retry_in_s=countdown, reason=reason)
        # max_retries is None on every step: the budgets are ours (Celery keeps an override of
        # max_retries on the task object, shared by every thread of a worker)
        return task.retry(exc=exc, countdown=countdown, throw=False) or exc

    def finish(self, task: CeleryTask, order_id: str | None, attempt: int, started: float,
               outcome: StepOutcome) -> dict[str, Any] | None:
        status: StepStatus = "succeeded" if outcome.succeeded else "failed"
        self.tell(task, order_id, status, attempt, outcome.reason, outcome.detail)
        log_step(order_id=order_id, step=task.name, outcome=status, attempt=attempt,
                 duration_ms=_ms(started), reason=outcome.reason)
        if not outcome.succeeded:
            # A failed step ends the forward chain quietly; the saga compensates from our reply.
            task.request.chain = None
            return None
        return outcome.output

    def tell(self, task: CeleryTask, order_id: str | None, status: StepStatus, attempt: int,
             reason: str | None, detail: dict[str, Any]) -> None:
        if order_id is None:
            return  # nothing the saga could attach it to; the dead letter keeps it
        # which worker did it: lets an operator see how a scaled service shares its queue
        detail = {**detail, "worker": task.request.hostname}
        reply = StepReply(order_id=order_id, step=task.name, status=status, reason=reason,
                          attempt=attempt, detail=detail)
        task.app.send_task(Task.STEP_RESULT, args=(reply.model_dump(mode="json"),),
                           queue=Queue.SAGA)

    def dead_letter(self, task_name: str, order_id: str | None, payload: Any, error: str) -> None:
        with self.session_factory.begin() as session:
            session.add(self.dead_letter_model(
                task=task_name, order_id=order_id, error=error,
                payload=json.dumps(payload, default=repr)))
        log_step(order_id=order_id, step=task_name, outcome="dead_lettered", error=error)


@cache
def _redis(url: str) -> "redis.Redis[bytes]":
    # waits out a Redis restart (~15 s) instead of failing the step it guards
    return redis.Redis.from_url(url, socket_timeout=5, retry=Retry(ExponentialBackoff(cap=2.0,
                                base=0.1), retries=12),
                                retry_on_error=[RedisConnectionError, RedisTimeoutError])


def _delivery_key(task: CeleryTask) -> str:
    return f"saga:deliveries:{task.request.id}:{task.request.retries}"


def count_delivery(task: CeleryTask) -> int:
    """How many deliveries of this very message (task id and retry number) have started without
    finishing: more than one means earlier ones died mid-run (a killed worker)."""
    if not str(task.app.conf.broker_url).startswith("redis"):
        return 1
    pipe = _redis(task.app.conf.broker_url).pipeline()
    pipe.incr(_delivery_key(task))
    pipe.expire(_delivery_key(task), 86400)
    try:
        return int(pipe.execute()[0])
    except redis.RedisError:  # a hint, not a gate: never fail a step for it
        log.warning("could not count the delivery of %s", task.request.id)
        return 1


def forget_delivery(task: CeleryTask) -> None:
    if not str(task.app.conf.broker_url).startswith("redis"):
        return
    try:
        _redis(task.app.conf.broker_url).delete(_delivery_key(task))
    except redis.RedisError:  # the count expires on its own; the step's outcome stands
        log.warning("could not clear the delivery count of %s", task.request.id)


class Busy(RetryableError):
    exhausted_reason = "step_busy"


@contextmanager
def exclusive(task: CeleryTask, order_id: str | None) -> Iterator[None]:
    if order_id is None or not str(task.app.conf.broker_url).startswith("redis"):
        yield
        return
    lock = _redis(task.app.conf.broker_url).lock(
        f"saga:running:{order_id}:{task.name}", timeout=LOCK_LEASE_S, blocking_timeout=LOCK_WAIT_S)
    try:
        acquired = lock.acquire()
    except redis.RedisError:
        # the lock only suppresses concurrent runs; the inbox keeps a repeat harmless
        log.warning("no lock (redis unreachable) order_id=%s step=%s", order_id, task.name)
        yield
        return
    if not acquired:
        raise Busy(f"another delivery of {task.name} for {order_id} is still running")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockError:  # the lease ran out: the inbox already holds what we did
            log.warning("lock lease expired order_id=%s step=%s", order_id, task.name)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
