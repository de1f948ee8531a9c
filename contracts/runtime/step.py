"""What every step does around its domain handler: check the payload at the door and dead-letter
what fails the contract, retry transient trouble with backoff, tell the saga what happened, log one
line, and stop the chain when the step failed for good."""
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from celery import Task as CeleryTask
from celery.utils.time import get_exponential_backoff_interval
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import sessionmaker

from contracts.messages import POISON, STUCK, StepReply, StepStatus, crash_reason
from contracts.names import PIVOT, Queue, Task
from contracts.runtime import deadletters
from contracts.runtime.app import MAX_RETRY_COUNTDOWN_S, brief
from contracts.runtime.guard import LOCK_WAIT_S, MAX_DELIVERIES, Busy, guarded

log = logging.getLogger("saga.step")

# A compensation or an e-mail that keeps failing for this many attempts is reported as stuck:
# the saga flags the order for a person, and the step keeps retrying.
ATTENTION_AFTER = 8

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
        step = Run(task, order_id_of(payload))
        try:
            with guarded(task, step.order_id) as delivery:
                if delivery.deliveries > MAX_DELIVERIES:
                    error = f"delivered {delivery.deliveries} times without finishing: " \
                            "a poison message?"
                    self.dead_letter(task.name, step.order_id, payload, error)
                    return self.finish(step, StepOutcome.failed(
                        POISON, deliveries=delivery.deliveries))
                return self._run(step, payload, schema, handler)
        except Busy as exc:
            # a duplicate: come back once the other delivery is done, whatever the budget
            log_step(order_id=step.order_id, step=task.name, outcome="busy", attempt=step.attempt)
            raise task.retry(exc=exc, countdown=LOCK_WAIT_S, **brief(step.order_id))

    def _run(self, step: "Run", payload: Any, schema: type[M],
             handler: Callable[[M], StepOutcome]) -> dict[str, Any] | None:
        task = step.task
        try:
            message = schema.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            self.dead_letter(task.name, step.order_id, payload, str(exc))
            return self.finish(step, StepOutcome.failed("invalid_message", errors=errors))
        step.earlier = list(getattr(message, "replies", ()))
        try:
            outcome = handler(message)
        except RetryableError as exc:
            budget = getattr(task, "retry_budget", None)  # None: for ever
            if budget is not None and task.request.retries >= budget:
                outcome = StepOutcome.failed(exc.exhausted_reason, error=str(exc),
                                             attempts=step.attempt)
            else:
                raise self.retry(step, exc, None)
        except Exception as exc:
            if getattr(task, "persistent", False):
                # a compensation or the e-mail never gives up; past a while a person is asked
                stuck = task.request.retries + 1 >= ATTENTION_AFTER
                raise self.retry(step, exc, STUCK if stuck else None)
            # The errback tells the saga, which compensates; this reply (if it gets out) also
            # brings the earlier steps' replies, so the order's timeline stays whole.
            try:
                self.tell(step, "failed", crash_reason(task.name), {"error": _error(exc)},
                          raised=True)
            except Exception:
                log.exception("could not report the crash of %s", task.name)
            raise
        return self.finish(step, outcome)

    def retry(self, step: "Run", exc: Exception, reason: str | None) -> Exception:
        task = step.task
        countdown = get_exponential_backoff_interval(self.backoff_s, task.request.retries,
                                                     MAX_RETRY_COUNTDOWN_S)
        self.tell(step, "retrying", reason, {"error": _error(exc), "retry_in_s": countdown})
        log_step(order_id=step.order_id, step=task.name, outcome="retrying",
                 attempt=step.attempt, duration_ms=step.ms(), error=_error(exc),
                 retry_in_s=countdown, reason=reason)
        # max_retries is None on every step: the budgets are ours (Celery keeps an override of
        # max_retries on the task object, shared by every thread of a worker)
        return task.retry(exc=exc, countdown=countdown, throw=False,
                          **brief(step.order_id)) or exc

    def finish(self, step: "Run", outcome: StepOutcome) -> dict[str, Any] | None:
        task = step.task
        status: StepStatus = "succeeded" if outcome.succeeded else "failed"
        output = outcome.output
        if outcome.succeeded and output is not None and task.request.chain:
            # the next step carries this reply on; the saga hears it with the chain's end
            reply = step.reply(status, outcome.reason, outcome.detail)
            output = {**output, "replies": [r.model_dump(mode="json")
                                            for r in (*step.earlier, reply)]}
            if task.name == PIVOT:  # ... and the pivot's at once (contracts/names.py)
                self.tell(step, status, outcome.reason, outcome.detail)
        else:
            self.tell(step, status, outcome.reason, outcome.detail)
        log_step(order_id=step.order_id, step=task.name, outcome=status, attempt=step.attempt,
                 duration_ms=step.ms(), reason=outcome.reason)
        if not outcome.succeeded:
            # A failed step ends the forward chain quietly; the saga compensates from our reply.
            task.request.chain = None
            return None
        return output

    def tell(self, step: "Run", status: StepStatus, reason: str | None, detail: dict[str, Any],
             raised: bool = False) -> None:
        if step.order_id is None:
            return  # nothing the saga could attach it to; the dead letter keeps it
        reply = step.reply(status, reason, detail, raised=raised, earlier=step.earlier)
        step.task.app.send_task(Task.STEP_RESULT, args=(reply.model_dump(mode="json"),),
                                queue=Queue.SAGA, **brief(step.order_id))

    def dead_letter(self, task_name: str, order_id: str | None, payload: Any, error: str) -> None:
        with self.session_factory.begin() as session:
            session.add(self.dead_letter_model(
                task=task_name, order_id=order_id, error=error,
                payload=json.dumps(payload, default=repr)))
        log_step(order_id=order_id, step=task_name, outcome="dead_lettered", error=error)


@dataclass
class Run:
    """One delivery of a step: what its replies and its log line are made of."""

    task: CeleryTask
    order_id: str | None
    earlier: list[StepReply] = field(default_factory=list)  # the chain's replies so far
    started: float = field(default_factory=time.monotonic)

    @property
    def attempt(self) -> int:
        return int(self.task.request.retries) + 1

    def ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)

    def reply(self, status: StepStatus, reason: str | None, detail: dict[str, Any],
              **more: Any) -> StepReply:
        # which worker did it: lets an operator see how a scaled service shares its queue
        return StepReply(order_id=str(self.order_id), step=self.task.name, status=status,
                         reason=reason, attempt=self.attempt,
                         detail={**detail, "worker": self.task.request.hostname}, **more)


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
