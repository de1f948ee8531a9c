"""The worker's consumer, keeping what Celery would otherwise ack or reject into nothing: an
undecodable body, a message that is not a task, an unknown or invalid task go to the app's dead
letters (`runtime.deadletters`) before Celery acks or rejects them. On RabbitMQ they go to its
dead-letter exchange instead (`runtime.rabbitmq`), from which the worker keeps them: Celery
rejects the last three there without requeue, and an undecodable body, which it would ack, is
rejected the same way."""
import logging
from typing import TYPE_CHECKING, Any

from celery.worker.consumer import Consumer

if TYPE_CHECKING:
    from runtime.celery_app import SagaApp

log = logging.getLogger("saga.deadletters")


def _raw(message: Any) -> Any:
    try:
        return message.body.decode("utf-8", "replace") if isinstance(message.body, bytes) \
            else message.body
    except Exception:
        return repr(message)


def _task_name(message: Any) -> str:
    headers = getattr(message, "headers", None) or {}
    return str(headers.get("task") or "<no task name>")


class DeadLetteringConsumer(Consumer):
    app: "SagaApp"

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        if self.app.worker_metrics is not None:
            self.app.worker_metrics.connection_losses.inc()
        super().on_connection_error_after_connected(exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        if self.app.dead_letter_exchange:
            log.error("undecodable body on %s: %s; rejected to the dead-letter exchange",
                      message.delivery_info.get("routing_key"), exc)
            message.reject_log_error(log, self.connection_errors)  # type: ignore[attr-defined]
            return
        self.app.dead_letters.record(_task_name(message), None, _raw(message),
                                     f"undecodable body: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._keep("<not a task message>", message, "unknown message format")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._keep(_task_name(message), message, f"unknown task: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._keep(_task_name(message), message, f"invalid task: {exc}")
        super().on_invalid_task(body, message, exc)

    def _keep(self, task: str, message: Any, error: str) -> None:
        # with a dead-letter exchange, Celery's reject (no requeue) takes it there
        if not self.app.dead_letter_exchange:
            self.app.dead_letters.record(task, None, _raw(message), error)
