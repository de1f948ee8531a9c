"""One trace per order (docs/interface.md, "Traces"), with OpenTelemetry configured only by its
standard variables: with OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
set, a process exports its spans over OTLP/HTTP; unset, nothing here is even imported.

The spans come from the maintained instrumentations: FastAPI (the API's requests), Celery (each
publish and each task run, the context riding in the message headers), SQLAlchemy (every
statement) and Redis (the step guard's commands). What ties them to one order:
- the order's POST stores its trace context with the order (`orders.trace_parent`), and every
  message the saga publishes from its outbox, later, from whichever process (the relay, a
  re-drive, a cancel), is published inside that context: `within_order`;
- a step publishes its reply and the chain's next step inside its own run, so they follow;
- the order id rides along as W3C baggage, and every span started under it carries it as the
  attribute `order.id` (OrderIdSpans).
Statements and commands outside any request or task (the relay's and the sweeper's polling) are
not sampled: they would each be a trace of their own, about no order."""
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Engine

log = logging.getLogger("saga.tracing")

ORDER_ID = "order.id"  # the baggage entry and the span attribute
_TRACECONTEXT = TraceContextTextMapPropagator()
_configured = False


def enabled() -> bool:
    """Whether this process exports traces: an OTLP endpoint is set."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service_name: str, engine: "Engine | None" = None, redis_clients: Sequence[Any] = (),
              celery: bool = True) -> bool:
    """Set up the tracer provider and the instrumentations of this process (a prefork child
    calls it from worker_process_init: the export thread does not survive a fork).
    OTEL_SERVICE_NAME, when set, names the process instead of `service_name`. Returns whether
    tracing is on."""
    global _configured
    if not enabled() or _configured:
        return _configured
    from runtime import tracing_setup  # the SDK and the instrumentations: only when on
    tracing_setup.install(service_name, engine, redis_clients, celery)
    _configured = True
    log.info("tracing on: spans go to %s", os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return True


def instrument_api(api: "FastAPI") -> None:
    if _configured:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        FastAPIInstrumentor.instrument_app(api, excluded_urls="healthz,metrics")


def shutdown() -> None:
    """Export what is buffered (at a worker's or the API's stop)."""
    if _configured:
        provider: Any = trace.get_tracer_provider()
        provider.shutdown()


def current_trace_parent(order_id: str) -> str | None:
    """The W3C traceparent of the current span (a new order's POST), to store with the order;
    None when tracing is off. The span is marked with the order's id too."""
    if not _configured:
        return None
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    span.set_attribute(ORDER_ID, order_id)
    carrier: dict[str, str] = {}
    _TRACECONTEXT.inject(carrier)
    return carrier.get("traceparent")


def mark(order_id: str) -> None:
    """Name the order on the current span (a request about it: a cancel, a re-drive)."""
    if _configured:
        trace.get_current_span().set_attribute(ORDER_ID, order_id)


@contextmanager
def within_order(order_id: str, trace_parent: str | None) -> Iterator[None]:
    """Run the block in the order's trace, with its id as baggage: what it publishes (Celery's
    instrumentation injects the context into the message) belongs to the order."""
    if not _configured:
        yield
        return
    ctx = context.get_current()
    if trace_parent:
        stored = _TRACECONTEXT.extract({"traceparent": trace_parent})
        here = trace.get_current_span(ctx).get_span_context()
        # inside a step's or a decision's span of this very trace, publish from there; anywhere
        # else (the relay, the sweeper, a cancel's own request) from the order's POST
        if here.trace_id != trace.get_current_span(stored).get_span_context().trace_id:
            ctx = stored
    token = context.attach(baggage.set_baggage(ORDER_ID, order_id, ctx))
    try:
        yield
    finally:
        context.detach(token)


def carrier() -> dict[str, str]:
    """The current trace context (traceparent, baggage), for a message that Celery's
    instrumentation does not carry (a reply on the replies' stream); empty when tracing is off."""
    if not _configured:
        return {}
    fields: dict[str, str] = {}
    propagate.inject(fields)
    return fields


@contextmanager
def run_span(name: str, order_id: str, fields: dict[str, str]) -> Iterator[None]:
    """A span for handling one message that came with `fields` (see carrier), as a child of the
    span that sent it, named like the Celery instrumentation's task runs ("run/<task>")."""
    if not _configured:
        yield
        return
    ctx = baggage.set_baggage(ORDER_ID, order_id, propagate.extract(fields))
    token = context.attach(ctx)
    try:
        with trace.get_tracer("saga").start_as_current_span(
                name, kind=trace.SpanKind.CONSUMER, attributes={ORDER_ID: order_id}):
            yield
    finally:
        context.detach(token)
