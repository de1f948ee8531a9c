"""The HTTP API (docs/interface.md): placing, listing, reading, cancelling and re-driving
orders, the dead letters, and /healthz."""
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as instrumented
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from contracts.names import Queue, queue_of
from orchestrator import catalog, dead_letter_reports, events, orders, saga, steering, ui
from orchestrator.backlog import Backlog
from orchestrator.bootstrap import Orchestrator, bootstrap
from orchestrator.front_door import BearerKeys, BodyLimit, short
from orchestrator.metrics import SagaMetrics
from orchestrator.models import Order, SagaEvent
from orchestrator.schemas import (
    NO_CONTROLS,
    CancelIn,
    DeadLetterOut,
    DeadLetterPage,
    ErrorOut,
    HealthOut,
    OrderIn,
    OrderLineIn,
    OrderOut,
    OrderPage,
    OrderSummary,
    StepOut,
    ValidationErrorOut,
)
from runtime import tracing
from runtime.db import database_trouble
from runtime.reply_stream import STREAM as REPLIES

log = logging.getLogger("saga.api")

# what a 503 tells a client to wait before it tries again
RETRY_AFTER_S = 2


# One Server-Sent Event of GET /orders/{id}/events: `data` is a timeline entry's JSON (as in
# GET /orders/{id}'s `steps`, with its `id`), or the order's end ({status, reason,
# needs_attention})
SSE_EVENT = {"type": "object", "required": ["event", "data"],
             "properties": {"event": {"type": "string", "enum": ["step", "end"]},
                            "data": {"type": "string"}, "id": {"type": "string"}}}


class AsciiJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


def _errors(*statuses: int, conflict: str | None = None) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation can give, for the OpenAPI document; `conflict` says what
    its 409 means when that is not the Idempotency-Key's."""
    said = {400: "the body could not be read as JSON (not UTF-8, say)",
            401: "no valid API key (only when API_KEYS is set)",
            404: "no such order", 409: "the Idempotency-Key was used with another body",
            413: "the body is over MAX_BODY_BYTES",
            422: "the request failed validation (an unknown SKU too: the catalog is the "
                 "server's, so a schema-valid body can name one it does not have)",
            500: "an unexpected error; its error_id is in the API's log",
            503: "the database is unavailable, or too many orders wait (Retry-After says "
                 "when to try again)"}
    if conflict is not None:
        said[409] = conflict
    return {status: {"model": ValidationErrorOut if status == 422 else ErrorOut,
                     "description": said[status]} for status in statuses}


def factory() -> FastAPI:
    """uvicorn's factory (`orchestrator.api:factory`): each uvicorn process builds its own."""
    orch = bootstrap()
    tracing.configure("orchestrator-api", orch.db.engine)  # when OTEL_EXPORTER_OTLP_* is set
    api = create_api(orch)
    tracing.instrument_api(api)
    return api


def create_api(orch: Orchestrator) -> FastAPI:
    """The API of one orchestrator process, on the parts its composition root built."""
    db = orch.db
    # connects on first use, not here; one try, so /healthz answers within a second or two
    broker = orch.settings.broker.depths()
    backlog = Backlog(orch.settings.broker.depths(), queue_of(saga.STEPS[0].action),
                      orch.settings.max_queue_depth)

    def queue_depths() -> dict[str, int]:
        # with the steps' replies not yet applied (runtime/reply_stream), on Redis
        return broker.depths(Queue.ALL, stream=REPLIES if orch.settings.broker.on_redis
                             else None)

    metrics = SagaMetrics(db.engine, queue_depths)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # what was handed over is published and marked rather than left to the relay
        orch.publisher.close()
        tracing.shutdown()

    api = FastAPI(title="Order saga", version="0.1.0", lifespan=lifespan,
                  description="Orders go payment → inventory → e-mail; failures are compensated.")

    @api.exception_handler(DBAPIError)
    @api.exception_handler(SQLAlchemyTimeoutError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # locked (SQLite's busy timeout), away (refused, reset) or slow (PostgreSQL's lock or
        # statement timeout, the pool's wait): nothing was stored, or it was and the
        # Idempotency-Key finds it on the next try. Any other database error is a bug: a 500.
        if not database_trouble(exc):
            return await unexpected(request, exc)
        error_id = uuid.uuid4().hex[:12]
        log.warning("database unavailable error_id=%s %s %s: %s: %s", error_id, request.method,
                    request.url.path, type(exc).__name__, str(exc).splitlines()[0][:300])
        return AsciiJSONResponse(
            {"detail": "the database is unavailable; try again (with the same Idempotency-Key)",
             "error_id": error_id}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("unexpected error error_id=%s %s %s", error_id, request.method,
                  request.url.path, exc_info=exc)
        return AsciiJSONResponse({"detail": "internal error", "error_id": error_id},
                                 status_code=500)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        # Starlette's 405 names the methods of the first route on the path only (`Allow: POST`
        # on /orders, which GET serves too): name every route's
        allowed = sorted({method for route in api.router.routes
                          if isinstance(route, Route)
                          and route.matches(request.scope)[0] is Match.PARTIAL
                          for method in route.methods or ()})
        return AsciiJSONResponse({"detail": "Method Not Allowed"}, status_code=405,
                                 headers={"Allow": ", ".join(allowed)})

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 body, ASCII-escaped: it echoes the input, and a lone surrogate
        # ("\ud800" is valid JSON) cannot be encoded as UTF-8, which would turn the 422 into a 500.
        # Only a short prefix of what was sent is echoed back (front_door.short).
        errors = [{**error, "input": short(error["input"])} if "input" in error else error
                  for error in exc.errors()]
        return AsciiJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    # each request's latency and count by route template (the SSE stream's only until its
    # first byte); only these two of the instrumentator's metrics: each costs every request
    (Instrumentator(excluded_handlers=["/metrics"], should_exclude_streaming_duration=True,
                    registry=metrics.registry)
     .add(instrumented.latency(should_include_status=False, registry=metrics.registry,
                               should_exclude_streaming_duration=True),
          instrumented.requests(registry=metrics.registry))
     .instrument(api))

    # outermost last: a request without a key is refused before its body is read
    api.add_middleware(BodyLimit, max_bytes=orch.settings.max_body_bytes)
    keys = [key.strip() for key in orch.settings.api_keys.split(",") if key.strip()]
    if keys:
        api.add_middleware(BearerKeys, keys=keys)

    def read_session() -> Iterator[Session]:
        with db.read_sessions() as session:
            yield session

    SessionDep = Annotated[Session, Depends(read_session)]

    # OpenAPI links: a generated client (or schemathesis' stateful phase) follows a new order to
    # what can be done with it
    follow = {name: {"operationId": name, "parameters": {"order_id": "$response.body#/id"}}
              for name in ("getOrder", "cancelOrder", "retryOrder")}

    @api.post("/orders", status_code=202, response_model=OrderOut, operation_id="placeOrder",
              responses={202: {"description": "the order, stored; its saga has begun",
                               "links": follow},
                         **_errors(400, 401, 409, 413, 422, 500, 503)})
    def post_order(body: OrderIn,
                   idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
                   ) -> Response:
        if backlog.too_deep():
            return AsciiJSONResponse(
                {"detail": f"too many orders waiting (more than {backlog.max_depth} on queue "
                           f"{backlog.queue}); try again later"},
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            placed = orders.place(db.engine, body, idempotency_key)
        except catalog.UnknownSku as unknown:
            raise RequestValidationError([{
                "loc": ("body", "items", unknown.index, "sku"), "type": "unknown_sku",
                "msg": f"unknown sku {unknown.sku!r}: not in the catalog", "input": unknown.sku}]
            ) from unknown
        except orders.IdempotencyConflict as conflict:
            raise HTTPException(
                409, "this Idempotency-Key was used with a different request body") from conflict
        if placed.order is not None and placed.outbox_id is not None:
            orch.publisher.submit(placed.order, placed.outbox_id)
            # answered from what was just stored: nothing has happened to it yet worth a read
            out = order_out(placed.order, [])
        else:
            with db.read_sessions() as session:
                found = orders.load(session, placed.order_id)
            assert found is not None  # orders are never deleted
            out = order_out(*found)
        log.info("order received order_id=%s replayed=%s", placed.order_id, placed.order is None)
        return json_response(out, 202, {"Location": f"/orders/{placed.order_id}"})

    @api.get("/orders", response_model=OrderPage, operation_id="listOrders",
             responses=_errors(401, 413, 422, 500, 503))
    def list_orders(session: SessionDep,
                    status: Literal["pending", "confirmed", "failed", "cancelled"] | None = None,
                    needs_attention: bool | None = None,
                    limit: Annotated[int, Query(ge=1, le=orders.PAGE_MAX)] = 50,
                    cursor: Annotated[str | None, Query(pattern=orders.CURSOR)] = None,
                    ) -> Response:
        """Orders newest first, without their timelines; follow `next_cursor` for older ones."""
        try:
            found, next_cursor = orders.page(session, limit, cursor, status, needs_attention)
        except orders.BadCursor as bad:
            raise RequestValidationError([{
                "loc": ("query", "cursor"), "type": "invalid_cursor",
                "msg": "not a cursor this API handed out", "input": cursor}]) from bad
        out = OrderPage(orders=[OrderSummary.model_validate(summary(o)) for o in found],
                        next_cursor=next_cursor)
        return Response(out.model_dump_json(), 200, media_type="application/json")

    @api.get("/orders/{order_id}", response_model=OrderOut, operation_id="getOrder",
             responses=_errors(401, 404, 413, 422, 500, 503))
    def get_order(order_id: str, session: SessionDep) -> Response:
        found = orders.load(session, order_id) if orders.could_exist(order_id) else None
        if found is None:
            raise HTTPException(404, f"no order {order_id}")
        return json_response(order_out(*found))

    @api.get("/orders/{order_id}/events", operation_id="orderEvents",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                              "description": "`event: step` per timeline entry as it is "
                                             "recorded, then `event: end` and the stream closes"},
                        **_errors(401, 404, 413, 422, 500, 503)})
    def order_events(order_id: str,
                     last_event_id: Annotated[str, Header(pattern=r"^[0-9]{0,18}$")] = "",
                     ) -> StreamingResponse:
        """The order's timeline live, as Server-Sent Events (what GET /ui/orders/{id} draws)."""
        # a session of its own, closed before the stream starts: a stream may stay open long
        with db.read_sessions() as session:
            known = orders.could_exist(order_id) and session.get(Order, order_id) is not None
        if not known:
            raise HTTPException(404, f"no order {order_id}")
        after = int(last_event_id) if last_event_id else 0
        return StreamingResponse(events.stream(db.read_sessions, order_id, after),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    def steered(order_id: str, done: steering.Steered, what: str) -> Response:
        tracing.mark(order_id)
        if done.answer == "unknown":
            raise HTTPException(404, f"no order {order_id}")
        if done.answer == "refused":
            raise HTTPException(409, f"order {order_id} is {done.status}: {what}")
        with db.read_sessions() as session:
            found = orders.load(session, order_id)
            assert found is not None  # orders are never deleted
            orch.publisher.submit_rows(session, found[0], done.owed)
        code = 200 if done.answer == "already" and done.status == saga.CANCELLED else 202
        return json_response(order_out(*found), code)

    @api.post("/orders/{order_id}/cancel", status_code=202, response_model=OrderOut,
              operation_id="cancelOrder",
              responses={200: {"model": OrderOut, "description": "the order was cancelled"},
                         **_errors(400, 401, 404, 409, 413, 422, 500, 503,
                                   conflict="the order failed, or is failing")})
    def cancel_order(order_id: str, body: CancelIn | None = None) -> Response:
        """Stop the order and undo what it did: the payment is refunded and the stock released
        (a confirmed order too), then the customer gets the cancellation e-mail. 202 while that
        runs (and when asked again meanwhile), 200 once it is cancelled; 409 for an order that
        failed or is failing."""
        if not orders.could_exist(order_id):
            raise HTTPException(404, f"no order {order_id}")
        done = steering.cancel(db.engine, order_id, body.reason if body else None)
        return steered(order_id, done, "only a pending or confirmed order can be cancelled")

    @api.post("/orders/{order_id}/retry", status_code=202, response_model=OrderOut,
              operation_id="retryOrder",
              responses=_errors(401, 404, 409, 413, 422, 500, 503,
                                conflict="the order does not need attention"))
    def retry_order(order_id: str) -> Response:
        """Re-drive an order flagged `needs_attention` once its cause is fixed: what it waits
        for (a compensation, an e-mail, the rest of its chain) is sent again, and the flag
        clears when that succeeds (at once when it waits for nothing). 409 for an order that
        needs nothing."""
        if not orders.could_exist(order_id):
            raise HTTPException(404, f"no order {order_id}")
        done = steering.retry(db.engine, order_id)
        return steered(order_id, done, "it does not need attention")

    @api.get("/dead-letters", response_model=DeadLetterPage, operation_id="listDeadLetters",
             responses=_errors(401, 413, 422, 500, 503))
    def list_dead_letters(
            session: SessionDep,
            service: Annotated[str | None, Query(max_length=32, pattern=NO_CONTROLS)] = None,
            order_id: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROLS)] = None,
            limit: Annotated[int, Query(ge=1, le=dead_letter_reports.PAGE_MAX)] = 50,
            cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None) -> Response:
        """Every process's dead letters, newest first (each is reported to the saga within a
        few seconds of being kept); those about an order also appear on its timeline."""
        found, last = dead_letter_reports.page(session, limit, int(cursor) if cursor else None,
                                               service, order_id)
        out = DeadLetterPage(dead_letters=[DeadLetterOut.model_validate(r, from_attributes=True)
                                           for r in found],
                             next_cursor=None if last is None else str(last))
        return Response(out.model_dump_json(), 200, media_type="application/json")

    @api.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        """Prometheus' text format: the saga's view (orchestrator/metrics.py) and the API's
        request latency. Open without an API key, as /healthz is."""
        metrics.catch_up()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz", response_model=HealthOut, operation_id="health",
             responses={503: {"model": HealthOut, "description": "a dependency is away"},
                        **_errors(413, 500)})
    def healthz(session: SessionDep, response: Response) -> dict[str, str]:
        checks = {"database": "ok", "broker": "ok"}
        try:
            session.execute(text("SELECT 1"))
        except Exception as exc:
            checks["database"] = f"unreachable: {exc.__class__.__name__}"
        try:
            broker.ping()
        except Exception as exc:
            checks["broker"] = f"unreachable: {exc.__class__.__name__}"
        if any(v != "ok" for v in checks.values()):
            response.status_code = 503
        return checks

    api.include_router(ui.router(db, orch.publisher))  # the operator's pages, /ui
    return api


def summary(order: Order) -> dict[str, Any]:
    return {"id": order.id, "status": order.status, "reason": order.reason,
            "needs_attention": order.needs_attention, "customer_email": order.customer_email,
            "items": order.items, "total_cents": order.total_cents, "currency": order.currency,
            "created_at": order.created_at, "updated_at": order.updated_at}


def order_out(order: Order, events: list[SagaEvent]) -> OrderOut:
    return OrderOut(
        id=order.id, status=order.status, reason=order.reason,
        needs_attention=order.needs_attention, customer_email=order.customer_email,
        items=[OrderLineIn.model_validate(line) for line in order.items],
        total_cents=order.total_cents, currency=order.currency,
        steps=[StepOut(name=e.name, status=e.status, at=e.at, attempt=e.attempt, reason=e.reason,
                       detail=e.detail) for e in events],
        created_at=order.created_at, updated_at=order.updated_at)


def json_response(out: OrderOut, status_code: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    # serialized once, by the model itself (FastAPI would validate it again on the way out)
    return Response(out.model_dump_json(), status_code, headers, media_type="application/json")
