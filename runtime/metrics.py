"""A worker's own metrics on WORKER_METRICS_PORT (docs/interface.md, "Metrics"): each task as
the worker saw it (its duration and Celery's outcome), the messages it received, its retries,
its lost broker connections.

Under prefork the tasks run in pool children, so every process of the node writes its samples
to files in a directory of the node's own (prometheus-client's multiprocess mode) and the main
process serves their sum: one endpoint per node, correct whatever the pool. The directory is
made afresh when the worker starts, before the pool forks, and removed when it stops."""
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Any

from celery import bootsteps
from celery.signals import task_postrun, task_prerun, task_received, task_retry
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.exposition import start_http_server

log = logging.getLogger("saga.metrics")

TASK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Celery's state at task_postrun, in the words the saga uses
OUTCOMES = {"SUCCESS": "succeeded", "RETRY": "retrying", "FAILURE": "failed",
            "REJECTED": "rejected", "IGNORED": "ignored"}


class WorkerMetrics:
    """The node's metrics. Made in the main process before the pool starts (children inherit
    them); each process writes its own files, which the main process sums when scraped."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="saga-worker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.directory
        # prometheus-client picks its value class when first imported: pick again now that
        # the directory is set (metrics made from here on write to files)
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self.task_seconds = Histogram("saga_worker_task_seconds", "Each task this worker ran, "
                                      "from start to end, by Celery's outcome",
                                      ["task", "outcome"], buckets=TASK_BUCKETS)
        self.received = Counter("saga_worker_messages_received", "Task messages this worker "
                                "took off its queue", ["task"])
        self.retries = Counter("saga_worker_retries", "Retries this worker scheduled", ["task"])
        self.connection_losses = Counter("saga_worker_connection_losses", "Times this worker "
                                         "lost its broker connection and reconnected")
        self.started: dict[str, float] = {}
        self.lock = threading.Lock()

    def connect(self) -> None:
        task_received.connect(self._received, weak=False)
        task_prerun.connect(self._prerun, weak=False)
        task_postrun.connect(self._postrun, weak=False)
        task_retry.connect(self._retry, weak=False)

    def serve(self, port: int) -> None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        start_http_server(port, registry=registry)
        log.info("worker metrics on port %d", port)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _received(self, request: Any = None, **_: Any) -> None:
        self.received.labels(getattr(request, "name", None) or "<unknown>").inc()

    def _prerun(self, task_id: str | None = None, **_: Any) -> None:
        if task_id:
            with self.lock:
                self.started[task_id] = time.monotonic()

    def _postrun(self, task_id: str | None = None, task: Any = None, state: str | None = None,
                 **_: Any) -> None:
        with self.lock:
            began = self.started.pop(task_id or "", None)
        if began is not None:
            self.task_seconds.labels(getattr(task, "name", "<unknown>"),
                                     OUTCOMES.get(state or "", (state or "unknown").lower())
                                     ).observe(time.monotonic() - began)

    def _retry(self, sender: Any = None, **_: Any) -> None:
        self.retries.labels(getattr(sender, "name", "<unknown>")).inc()


def metrics_step(port: int) -> type[bootsteps.StartStopStep]:
    """A worker bootstep serving the node's metrics on `port` (WORKER_METRICS_PORT)."""

    class Metrics(bootsteps.StartStopStep):
        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            # here, not in start(): the blueprint builds every step before the pool forks
            self.metrics = WorkerMetrics()
            self.metrics.connect()
            parent.app.worker_metrics = self.metrics

        def start(self, parent: Any) -> None:
            try:
                self.metrics.serve(port)
            except OSError as exc:  # the port taken: the worker works on, unmeasured
                log.error("worker metrics not served: port %d: %s", port, exc)

        def stop(self, parent: Any) -> None:
            self.metrics.close()

    return Metrics
