"""GET /metrics on the API: the saga's view for Prometheus (docs/interface.md, "Metrics"),
computed at scrape time from what is already stored, so that nothing on an order's path pays
for it:

- what the saga decided, from its own tables: each order that reached a terminal state
  (`orders.ended_at`) and each timeline entry are read once, after the last ones read, and
  counted into the counters and histograms below (from the API's first scrape on, as any
  process's counters: Prometheus' rate() and increase() take a restart in their stride);
- what is owed or waiting, counted afresh at each scrape: orders open and needing attention,
  outbox rows unpublished, dead letters per service, each queue's depth on the broker.

The API's own request latency is prometheus-fastapi-instrumentator's (orchestrator/api.py)."""
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, Select, func, select

from orchestrator import saga
from orchestrator.models import DeadLetterReport, Order, Outbox, SagaEvent
from runtime.db import utcnow

ORDER_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# On PostgreSQL an id or a timestamp is taken before its transaction commits, so rows can
# become visible out of order: each read looks this far behind the newest row read, and skips
# the rows it has counted already.
LOOKBACK_IDS = 500
LOOKBACK = timedelta(seconds=30)
BATCH = 5000  # rows read per query; a scrape reads as many batches as it needs to catch up
OUTCOMES = ("succeeded", "failed", "retrying")


class SagaMetrics:
    """The API's registry: counters fed from the saga's tables, gauges read at each scrape.
    One per API process; `scrape()` is safe to call from several threads."""

    def __init__(self, engine: Engine, queue_depths: Callable[[], dict[str, int]]) -> None:
        self.engine, self.lock = engine, threading.Lock()
        # not described by collecting: that would read the database when the API is built
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.orders = Counter("saga_orders", "Orders that reached a terminal status (reason: "
                              "the failure's or cancellation's, else empty)",
                              ["status", "reason"], registry=r)
        self.order_seconds = Histogram("saga_order_seconds", "From POST /orders to the order's "
                                       "terminal status", ["status"], buckets=ORDER_BUCKETS,
                                       registry=r)
        self.step_seconds = Histogram("saga_step_seconds", "One attempt of a step or "
                                      "compensation, as its worker ran it", ["step", "outcome"],
                                      buckets=STEP_BUCKETS, registry=r)
        self.retries = Counter("saga_step_retries", "Attempts of a step that ended in a retry",
                               ["step"], registry=r)
        self.compensations = Counter("saga_compensations", "Compensations that succeeded",
                                     ["step"], registry=r)
        r.register(_Owed(engine, queue_depths))
        self.ends: _Tail | None = None
        self.events: _Tail | None = None

    def catch_up(self) -> None:
        """Count what the saga recorded since the last scrape (the first one starts here)."""
        with self.lock, self.engine.connect() as conn:
            if self.ends is None or self.events is None:
                newest = conn.scalar(select(func.max(SagaEvent.id))) or 0
                # an order may end twice (confirmed, then cancelled): once per status
                self.ends = _Tail(ORDERS_T.c.ended_at, LOOKBACK, utcnow(),
                                  lambda row: (row.id, row.status))
                self.events = _Tail(EVENTS_T.c.id, LOOKBACK_IDS, newest, lambda row: row.id)
            for order in self.ends.read(conn, _ENDED):
                self._ended(order)
            for event in self.events.read(conn, _RECORDED):
                self._recorded(event)

    def _ended(self, order: Any) -> None:
        reason = order.reason if order.status != "confirmed" and order.reason else ""
        self.orders.labels(order.status, reason).inc()
        self.order_seconds.labels(order.status).observe(
            max(0.0, (order.ended_at - order.created_at).total_seconds()))

    def _recorded(self, event: Any) -> None:
        if event.status not in OUTCOMES:
            return  # the saga's own entries (a cancel or re-drive asked for, a dead letter)
        if event.status == "retrying":
            self.retries.labels(event.name).inc()
        if event.status == "succeeded" and event.name in saga.COMPENSATIONS:
            self.compensations.labels(event.name).inc()
        started = _started_at(event.detail)
        if started is not None:
            self.step_seconds.labels(event.name, event.status).observe(
                max(0.0, (event.at - started).total_seconds()))


ORDERS_T, EVENTS_T = Order.__table__, SagaEvent.__table__
_ENDED = select(ORDERS_T.c.id, ORDERS_T.c.status, ORDERS_T.c.reason, ORDERS_T.c.created_at,
                ORDERS_T.c.ended_at).order_by(ORDERS_T.c.ended_at)
_RECORDED = select(EVENTS_T.c.id, EVENTS_T.c.name, EVENTS_T.c.status, EVENTS_T.c.at,
                   EVENTS_T.c.detail).order_by(EVENTS_T.c.id)


class _Tail:
    """A reader of rows appended in the order of `column` (an id, a time), each read once: the
    key of each row read stays in `seen` while it is within the lookback."""

    def __init__(self, column: Any, lookback: Any, newest: Any,
                 key: Callable[[Any], Hashable]) -> None:
        self.column, self.lookback, self.newest, self.key = column, lookback, newest, key
        self.seen: dict[Hashable, Any] = {}

    def read(self, conn: Connection, query: Select[Any]) -> Iterator[Any]:
        low = self.newest - self.lookback
        while True:
            rows = conn.execute(query.where(self.column > low).limit(BATCH)).all()
            for row in rows:
                key, at = self.key(row), getattr(row, self.column.name)
                if key not in self.seen:
                    self.seen[key], self.newest = at, max(self.newest, at)
                    yield row
            if len(rows) < BATCH:
                break
            low = getattr(rows[-1], self.column.name)  # a backlog: page on through it
        low = self.newest - self.lookback
        self.seen = {k: at for k, at in self.seen.items() if at > low}


def _started_at(detail: dict[str, Any] | None) -> datetime | None:
    try:
        return datetime.fromisoformat(str((detail or {})["started_at"]))
    except (KeyError, ValueError):
        return None  # an entry of the saga's own, or one recorded before steps said it


class _Owed(Collector):
    """What is open, owed or waiting right now: counted at each scrape, with indexed queries."""

    def __init__(self, engine: Engine, queue_depths: Callable[[], dict[str, int]]) -> None:
        self.engine, self.queue_depths = engine, queue_depths

    def collect(self) -> Iterable[Metric]:
        with self.engine.connect() as conn:
            open_ = conn.scalar(select(func.count()).where(ORDERS_T.c.closed.is_(False)))
            attention = conn.scalar(select(func.count()).where(
                ORDERS_T.c.needs_attention.is_(True)))
            owed = conn.scalar(select(func.count()).select_from(Outbox.__table__)
                               .where(Outbox.__table__.c.sent_at.is_(None)))
            reports = DeadLetterReport.__table__
            letters = conn.execute(select(reports.c.service, func.count())
                                   .group_by(reports.c.service)).all()
        yield _gauge("saga_orders_open", "Orders whose saga still owes something (a step, a "
                     "compensation, an e-mail)", open_)
        yield _gauge("saga_orders_needing_attention", "Orders flagged for a person "
                     "(GET /orders?needs_attention=true; POST /orders/{id}/retry)", attention)
        yield _gauge("saga_outbox_owed", "Messages decided but not yet published", owed)
        dead = GaugeMetricFamily("saga_dead_letters", "Dead letters kept, by the process that "
                                 "kept them (GET /dead-letters)", labels=["service"])
        for service, count in letters:
            dead.add_metric([service], count)
        yield dead
        depth = GaugeMetricFamily("saga_queue_depth", "Messages waiting on each queue "
                                  "(not those a worker holds)", labels=["queue"])
        for queue, n in self.queue_depths().items():
            depth.add_metric([queue], n)
        yield depth


def _gauge(name: str, documentation: str, value: int | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value or 0)
