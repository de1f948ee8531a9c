"""Every process tells the saga about its dead letters: the saga worker lists them all (GET
/dead-letters) and flags the order each one is about. A dead letter is stored first, in the
process's own database, whatever the broker is doing; a thread of the worker's main process
then reports what is not reported yet, so a report is never lost to a broker that was away when
the message died, and is never published from inside Celery's or kombu's own callbacks. The saga
keeps one report per dead letter, so two replicas reporting the same row are harmless."""
import logging
import threading
from typing import Any

from celery import bootsteps
from pydantic import ValidationError

from contracts.messages import DeadLetterReport
from contracts.names import Queue, Task
from runtime.deadletters import DeadLetters
from runtime.headers import brief
from runtime.retries import FAIL_FAST

log = logging.getLogger("saga.deadletters")

REPORT_INTERVAL_S = 2.0


def report(app: Any, service: str, dead_letters: DeadLetters) -> int:
    """One round: report what is not reported yet. Returns how many were."""
    letters = dead_letters.unreported()
    done: list[int] = []
    try:
        for letter in letters:
            message = _report_of(service, letter)
            if message is not None:
                app.send_task(Task.DEAD_LETTER, args=(message,), queue=Queue.SAGA,
                              **brief(message["order_id"]), **FAIL_FAST)
            done.append(letter["dead_letter_id"])
    finally:
        if done:
            dead_letters.mark_reported(done)
    return len(done)


def _report_of(service: str, letter: dict[str, Any]) -> dict[str, Any] | None:
    """The report of one dead letter, or None for one never to report (marked all the same,
    so that it does not block the ones after it)."""
    if letter["task"] == Task.DEAD_LETTER:
        # a report the saga could not take: reporting it would go round for ever (it stays in
        # the saga's own dead letters, listed by its CLI)
        return None
    order_id = letter["order_id"]
    try:
        # what a junk message claimed for itself may not fit the report: it is cut, not lost
        return DeadLetterReport(
            service=service, dead_letter_id=letter["dead_letter_id"],
            task=str(letter["task"])[:128], error=str(letter["error"])[:2000],
            order_id=order_id if isinstance(order_id, str) and len(order_id) <= 64 else None,
            created_at=letter["created_at"]).model_dump(mode="json")
    except ValidationError:
        log.exception("dead letter %s of %s cannot be reported; it stays listed by its CLI",
                      letter["dead_letter_id"], service)
        return None


def reporter_step(service: str, dead_letters: DeadLetters,
                  interval_s: float = REPORT_INTERVAL_S) -> type[bootsteps.StartStopStep]:
    """A worker bootstep: the reporting rounds, in a thread of the worker's main process."""
    stopping = threading.Event()

    def run(app: Any) -> None:
        while not stopping.wait(interval_s):
            try:
                report(app, service, dead_letters)
            except Exception as exc:  # the broker or the database away: the next round
                log.warning("reporting dead letters failed: %s: %s", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")

    class DeadLetterReporter(bootsteps.StartStopStep):
        def start(self, parent: Any) -> None:
            threading.Thread(target=run, args=(parent.app,), name="dead-letter-reporter",
                             daemon=True).start()

        def stop(self, parent: Any) -> None:
            stopping.set()

        def terminate(self, parent: Any) -> None:
            stopping.set()

    return DeadLetterReporter
