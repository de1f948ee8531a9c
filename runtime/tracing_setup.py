"""The OpenTelemetry SDK's part of runtime/tracing.py, imported only when tracing is on: the
tracer provider, its exporter and sampler, and the instrumentations."""
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from sqlalchemy import Engine

from runtime.tracing import ORDER_ID


def install(service_name: str, engine: Engine | None, redis_clients: Sequence[Any],
            celery: bool) -> None:
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME")
                                or service_name})
    provider = TracerProvider(resource=resource, sampler=NotAlone(_get_from_env_or_default()))
    provider.add_span_processor(OrderIdSpans())
    # OTLP/HTTP, its endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    if celery:
        CeleryInstrumentor().instrument(  # type: ignore[no-untyped-call]
            tracer_provider=provider)
    if engine is not None:
        SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=provider)
    for client in redis_clients:
        RedisInstrumentor.instrument_client(client, tracer_provider=provider)


class OrderIdSpans(SpanProcessor):
    """Every span started where the order id is in the baggage carries it as an attribute (a
    trace backend finds an order's trace by it)."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        order_id = baggage.get_baggage(ORDER_ID, parent_context)
        if order_id is not None:
            span.set_attribute(ORDER_ID, str(order_id))


class NotAlone(Sampler):
    """The configured sampler (OTEL_TRACES_SAMPLER), except that a client span with no parent
    (a statement or a Redis command of a polling loop, outside any request or task) is dropped:
    it is about no order."""

    def __init__(self, configured: Sampler) -> None:
        self.configured = configured

    def should_sample(self, parent_context: context.Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None,
                      trace_state: trace.TraceState | None = None) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self.configured.should_sample(parent_context, trace_id, name, kind, attributes,
                                             links, trace_state)

    def get_description(self) -> str:
        return f"NotAlone({self.configured.get_description()})"
