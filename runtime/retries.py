"""Every retry and publish policy, in one place (what counts as database trouble, which every
step waits out, is `runtime.db.database_trouble`: this module stays free of SQLAlchemy, which
the benchmark's bare chain must not load). What a step may retry, and for how long, is
declared on the step itself (`runtime.step.SagaStep`: `retry_budget`, `persistent`,
`exhausted_reason`); this module holds the numbers and the rules they share."""
import random
from typing import Any

# The longest wait between two attempts of anything. The broker's visibility timeout
# (runtime.celery_app) must exceed the longest task plus this, or a healthy task runs twice.
MAX_RETRY_COUNTDOWN_S = 60

# A persistent step (a compensation, an e-mail) that has failed this many attempts is reported
# as stuck: the saga flags the order for a person, and the step keeps retrying.
ATTENTION_AFTER = 8

# Publishing from inside a task (a reply, the next step) waits out a Redis restart rather than
# failing the task.
PATIENT_PUBLISH: dict[str, Any] = {"max_retries": 30, "interval_start": 0, "interval_step": 0.5,
                                   "interval_max": 2}

# Publishing what an outbox row already guarantees (from a request, or the relay) gives up at
# once when the broker is away: the relay sends it later.
FAIL_FAST: dict[str, Any] = {"retry": True, "retry_policy": {
    "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}}


class RetryableError(Exception):
    """Trouble that may pass (a gateway timeout, an SMTP outage): the step retries with backoff,
    within its budget (`SagaStep.retry_budget`), then fails with its `exhausted_reason`."""


def backoff_s(base_s: float, retries: int, jitter: bool = False) -> float:
    """Exponential backoff from `base_s`, capped at MAX_RETRY_COUNTDOWN_S: Celery's
    `retry_backoff` rule (`celery.utils.time.get_exponential_backoff_interval`) in float seconds,
    so a sub-second base works. `jitter` spreads the retries of many messages that failed at once
    (a database outage) over the whole interval ("full jitter", uniform rather than Celery's
    whole seconds)."""
    # A persistent step may retry for ever; past 2**32 the cap has long won, and a float power
    # of a thousand-odd retries would overflow.
    countdown = min(float(MAX_RETRY_COUNTDOWN_S), base_s * 2.0 ** min(retries, 32))
    return random.uniform(0, countdown) if jitter else countdown
