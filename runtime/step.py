"""SagaStep, the celery.Task base class of every saga step and compensation.

A service declares a step with its options; the class does what every step does around its
domain handler: check the payload at the door and dead-letter what fails the contract, guard the
delivery, retry transient trouble with backoff, tell the saga what happened, log one line, and
stop the chain when the step failed for good."""
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from kombu.exceptions import OperationalError as KombuOperationalError
from pydantic import BaseModel, ValidationError

from contracts.messages import (
    POISON,
    STUCK,
    ChainMessage,
    StepReply,
    StepStatus,
    crash_reason,
    order_id_of,
)
from runtime import tracing
from runtime.db import database_trouble
from runtime.deadletters import DeadLetteringTask
from runtime.guard import LOCK_WAIT_S, MAX_DELIVERIES, Busy
from runtime.headers import brief
from runtime.outcome import StepOutcome
from runtime.retries import ATTENTION_AFTER, RetryableError, backoff_s

if TYPE_CHECKING:
    from runtime.celery_app import SagaApp

log = logging.getLogger("saga.step")
# How long a step that has done its work waits for the broker to take its reply: within the
# guard's lease (runtime.guard.LOCK_LEASE_S), longer than a partition or a Redis restart lasts.
TELL_PATIENCE_S = 20.0
BROKER_TROUBLE = (KombuOperationalError, ConnectionError, TimeoutError, redis.RedisError)


class SagaStep(DeadLetteringTask):
    """A step of the saga: one message in, its domain handler (the decorated function) called
    with the validated message, a `StepOutcome` out. Declared with `SagaApp.step`::

        @app.step(Task.AUTHORIZE_PAYMENT, message=AuthorizePayment, retry_budget=4,
                  exhausted_reason="payment_unavailable")
        def authorize(msg: AuthorizePayment) -> StepOutcome: ...

    The options below become class attributes, as Celery's own do (`max_retries`, `acks_late`).
    A name that is an option of neither this class nor `celery.Task` is a TypeError when the
    step is declared, never a step that quietly behaves otherwise."""

    #: The pydantic model of the step's one argument. A payload that fails it is dead-lettered
    #: and the step fails with reason ``invalid_message``. Required.
    message: type[BaseModel] | None = None

    #: Never give up: a compensation or an e-mail retries whatever goes wrong for as long as it
    #: takes, and reports itself stuck (the saga flags the order for a person) once it has failed
    #: ``runtime.retries.ATTENTION_AFTER`` attempts. A step that is not persistent fails the
    #: order on any error that is not a ``RetryableError``.
    persistent: bool = False

    #: How many times a ``RetryableError`` is retried before the step fails with
    #: ``exhausted_reason``. ``None``: for ever.
    retry_budget: int | None = None

    #: The order's failure reason once ``retry_budget`` is spent.
    exhausted_reason: str = "unavailable"

    #: The first retry waits this long, each next one twice as long, up to
    #: ``runtime.retries.MAX_RETRY_COUNTDOWN_S``.
    retry_backoff_s: float = 1.0

    # Celery's own retry limit stays off: the budget above is ours (Celery keeps an override of
    # max_retries on the task object, which every thread of a worker shares).
    max_retries = None

    # Celery renders every return value with saferepr for its success line (which we quiet) and
    # its events; our output carries the order and the chain's replies, and rendering 1 KiB of it
    # cost more than a database transaction (0.3-0.8 ms a step, make bench). The start is enough.
    resultrepr_maxsize = 64

    app: "SagaApp"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in vars(cls):
            if not name.startswith("_") and not any(name in vars(b) for b in cls.__mro__[1:]):
                raise TypeError(f"step {cls.__name__}: {name!r} is not an option of SagaStep "
                                "or celery.Task")
        if cls.message is None:
            raise TypeError(f"step {cls.__name__}: `message` (its pydantic model) is required")
        if cls.persistent and cls.retry_budget is not None:
            raise TypeError(f"step {cls.__name__}: a persistent step has no retry budget")

    def __call__(self, payload: Any) -> dict[str, Any] | None:
        # Celery's tracer calls this with the request already pushed (task_has_custom).
        run = Run(self, order_id_of(payload))
        delivery = f"{self.request.id}:{self.request.retries}"
        try:
            with self.app.guard.hold(delivery, run.order_id, self.name) as held:
                if held.deliveries > MAX_DELIVERIES:
                    self._dead_letter(
                        run, payload,
                        f"delivered {held.deliveries} times without finishing: a poison message?")
                    return self._finish(run, StepOutcome.failed(POISON,
                                                                deliveries=held.deliveries))
                return self._deliver(run, payload)
        except Busy as exc:
            # a duplicate: come back once the other delivery is done, whatever the budget
            log_step(order_id=run.order_id, step=self.name, outcome="busy", attempt=run.attempt)
            raise self.retry(exc=exc, countdown=LOCK_WAIT_S, **brief(run.order_id))

    def _deliver(self, run: "Run", payload: Any) -> dict[str, Any] | None:
        assert self.message is not None  # checked when the step was declared
        try:
            message = self.message.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            self._dead_letter(run, payload, str(exc))
            return self._finish(run, StepOutcome.failed("invalid_message", errors=errors))
        if isinstance(message, ChainMessage):
            run.earlier, run.report_at_once = list(message.replies), list(message.report_at_once)
        try:
            outcome: StepOutcome = self.run(message)
        except RetryableError as exc:
            if self.retry_budget is not None and self.request.retries >= self.retry_budget:
                outcome = StepOutcome.failed(self.exhausted_reason, error=str(exc),
                                             attempts=run.attempt)
            else:
                raise self._retry(run, exc, self._stuck())
        except Exception as exc:
            if self.persistent:
                raise self._retry(run, exc, self._stuck())
            if database_trouble(exc):
                # the step's own database is away or restarting: its transaction did nothing,
                # so the order waits for it (whatever the budget) rather than failing over it
                raise self._retry(run, exc, None)
            # The errback tells the saga, which compensates; this reply (if it gets out) also
            # brings the earlier steps' replies, so the order's timeline stays whole.
            try:
                self._tell(run, "failed", crash_reason(self.name), {"error": _error(exc)},
                           raised=True)
            except Exception:
                log.exception("could not report the crash of %s", self.name)
            raise
        return self._finish(run, outcome)

    def _stuck(self) -> str | None:
        """A persistent step that has failed ATTENTION_AFTER attempts says it is stuck (an SMTP
        server away for long, a bug): the saga flags the order, and the step goes on."""
        stuck = self.persistent and self.request.retries + 1 >= ATTENTION_AFTER
        return STUCK if stuck else None

    def _dead_letter(self, run: "Run", payload: Any, error: str) -> None:
        try:
            self.app.dead_letters.store(self.name, run.order_id, payload, error)
        except Exception as exc:
            if not database_trouble(exc):
                raise
            # kept on the queue, not lost: delivered again once the database is back
            raise self._retry(run, exc, None) from exc

    def _retry(self, run: "Run", exc: Exception, reason: str | None) -> BaseException:
        countdown = backoff_s(self.retry_backoff_s, self.request.retries)
        self._tell(run, "retrying", reason, {"error": _error(exc), "retry_in_s": countdown})
        log_step(order_id=run.order_id, step=self.name, outcome="retrying", attempt=run.attempt,
                 duration_ms=run.ms(), error=_error(exc), retry_in_s=countdown, reason=reason)
        retry: BaseException | None = self.retry(exc=exc, countdown=countdown, throw=False,
                                                 **brief(run.order_id))
        return retry or exc

    def _finish(self, run: "Run", outcome: StepOutcome) -> dict[str, Any] | None:
        status: StepStatus = "succeeded" if outcome.succeeded else "failed"
        output = outcome.output
        if outcome.succeeded and output is not None and self.request.chain:
            # the next step carries this reply on; the saga hears it with the chain's end...
            reply = run.reply(status, outcome.reason, outcome.detail)
            output = {**output, "report_at_once": run.report_at_once,
                      "replies": [r.model_dump(mode="json") for r in (*run.earlier, reply)]}
            if self.name in run.report_at_once:  # ... unless the saga asked to hear it now
                self._tell(run, status, outcome.reason, outcome.detail)
        else:
            self._tell(run, status, outcome.reason, outcome.detail)
        log_step(order_id=run.order_id, step=self.name, outcome=status, attempt=run.attempt,
                 duration_ms=run.ms(), reason=outcome.reason)
        if not outcome.succeeded:
            # A failed step ends the forward chain quietly; the saga compensates from our reply.
            self.request.chain = None
            return None
        return output

    def _tell(self, run: "Run", status: StepStatus, reason: str | None, detail: dict[str, Any],
              raised: bool = False) -> None:
        if run.order_id is None:
            return  # nothing the saga could attach it to; the dead letter keeps it
        reply = run.reply(status, reason, detail, raised=raised, earlier=run.earlier)
        message, trace = reply.model_dump(mode="json"), tracing.carrier()
        # The step's effect is committed: a broker that is away for a moment (a partition, a
        # restart) is waited out here, not turned into a dead letter that flags the order.
        deadline = time.monotonic() + TELL_PATIENCE_S
        attempt = 0
        while True:
            try:
                self.app.replies.send(message, run.order_id, trace)
                return
            except BROKER_TROUBLE as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("reply not sent order_id=%s step=%s (broker away: %s); trying again",
                            run.order_id, self.name, type(exc).__name__)
                time.sleep(min(2.0, backoff_s(0.25, attempt)))
                attempt += 1


@dataclass
class Run:
    """One delivery of a step: what its replies and its log line are made of."""

    task: SagaStep
    order_id: str | None
    earlier: list[StepReply] = field(default_factory=list)  # the chain's replies so far
    report_at_once: list[str] = field(default_factory=list)  # steps the saga wants to hear now
    started: float = field(default_factory=time.monotonic)
    # wall clock, for the timeline's bars (GET /ui/orders/{id}); `started` measures durations
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def attempt(self) -> int:
        return int(self.task.request.retries) + 1

    def ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)

    def reply(self, status: StepStatus, reason: str | None, detail: dict[str, Any],
              **more: Any) -> StepReply:
        # which worker did it (lets an operator see how a scaled service shares its queue) and
        # when it began: the timeline draws each attempt from its start to its end
        return StepReply(order_id=str(self.order_id), step=self.task.name, status=status,
                         reason=reason, attempt=self.attempt,
                         detail={**detail, "worker": self.task.request.hostname,
                                 "started_at": self.started_at.isoformat()}, **more)


def log_step(**fields: Any) -> None:
    """The one structured line a step says about what it did, with the order id."""
    level = (logging.WARNING if fields.get("outcome") in ("failed", "dead_lettered")
             else logging.INFO)
    log.log(level, json.dumps(fields, default=str, sort_keys=False))


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
