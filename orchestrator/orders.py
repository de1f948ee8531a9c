"""Placing an order: price it, store it with its outbox row in one transaction, honour the
Idempotency-Key. Plain functions; the API only maps their outcomes onto HTTP."""
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import catalog, saga
from orchestrator.models import Order, Outbox, SagaEvent
from orchestrator.schemas import OrderIn
from runtime import tracing
from runtime.db import utcnow

# Core statements, built once: one of these transactions runs for every order placed
_ADD_ORDER = insert(Order.__table__)
_OWE = insert(Outbox.__table__).returning(Outbox.__table__.c.id)


class IdempotencyConflict(Exception):
    """The key was used before with a different body."""


@dataclass(frozen=True)
class Placed:
    order_id: str
    order: Order | None = None  # the new order as stored; None when the key replayed one
    outbox_id: int | None = None  # the saga's first message, owed to the broker


def place(db: Engine, request: OrderIn, idempotency_key: str | None) -> Placed:
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        earlier = _by_key(db, idempotency_key, fingerprint)
        if earlier is not None:
            return Placed(earlier)
    try:
        with db.begin() as conn:
            lines = [(line.sku, line.quantity) for line in request.items]
            now = utcnow()
            order_id = str(uuid.uuid4())
            row = {"id": order_id, "status": "pending", "reason": None,
                   "customer_email": str(request.customer_email),
                   "items": [{"sku": s, "quantity": q} for s, q in lines],
                   "total_cents": catalog.price(conn, lines), "currency": catalog.CURRENCY,
                   "payment_token": request.payment_token, "idempotency_key": idempotency_key,
                   "request_fingerprint": fingerprint, "compensating": [], "compensated": [],
                   "needs_attention": False, "closed": False, "redrives": 0, "created_at": now,
                   "updated_at": now, "ended_at": None,
                   # the POST's trace: every message of the saga is published in it
                   "trace_parent": tracing.current_trace_parent(order_id)}
            conn.execute(_ADD_ORDER, row)
            outbox_id = conn.execute(_OWE, {"order_id": order_id, "task": saga.STEPS[0].action,
                                            "created_at": now, "sent_at": None,
                                            "attempts": 0}).scalar_one()
        # not attached to any session: it only carries the stored values to the response
        return Placed(order_id, Order(**row), outbox_id)
    except IntegrityError:
        # the same key raced us in another request and won: answer with its order
        earlier = _by_key(db, idempotency_key or "", fingerprint)
        if earlier is None:
            raise
        return Placed(earlier)


def _by_key(db: Engine, key: str, fingerprint: str) -> str | None:
    with db.connect() as conn:
        row = conn.execute(select(Order.id, Order.request_fingerprint)
                           .where(Order.idempotency_key == key)).first()
    if row is None:
        return None
    if row.request_fingerprint != fingerprint:
        raise IdempotencyConflict(key)
    return str(row.id)


def load(session: Session, order_id: str) -> tuple[Order, list[SagaEvent]] | None:
    order = session.get(Order, order_id)
    if order is None:
        return None
    events = list(session.scalars(select(SagaEvent).where(SagaEvent.order_id == order_id)
                                  .order_by(SagaEvent.at, SagaEvent.id)))
    return order, events


# GET /orders: at most this many a page
PAGE_MAX = 200


class BadCursor(ValueError):
    """A cursor this API did not hand out."""


def page(session: Session, limit: int, cursor: str | None = None, status: str | None = None,
         needs_attention: bool | None = None) -> tuple[list[Order], str | None]:
    """Orders newest first, `limit` of them after `cursor`, and the cursor of the next page.
    The cursor is the last order's (created_at, id): orders placed meanwhile are newer, so they
    never shift a page that follows."""
    query = select(Order)
    if status is not None:
        query = query.where(Order.status == status)
    if needs_attention is not None:
        query = query.where(Order.needs_attention == needs_attention)
    if cursor is not None:
        at, order_id = _decode(cursor)
        query = query.where(or_(Order.created_at < at,
                                and_(Order.created_at == at, Order.id < order_id)))
    found = list(session.scalars(query.order_by(Order.created_at.desc(), Order.id.desc())
                                 .limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    return found, (_encode(found[-1]) if more else None)


# A cursor is the last order's creation time (microseconds since the epoch) and its id. Any
# string of this shape is a cursor (the schema says so), so a client's cursor is never refused.
CURSOR = r"^[0-9]{1,16}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _encode(order: Order) -> str:
    return f"{(order.created_at - EPOCH) // MICROSECOND}.{order.id}"


def _decode(cursor: str) -> tuple[datetime, str]:
    micros, dot, order_id = cursor.partition(".")
    if not (dot and micros.isdigit() and len(micros) <= 16):
        raise BadCursor(cursor)
    return EPOCH + int(micros) * MICROSECOND, order_id


def could_exist(order_id: str) -> bool:
    """Order ids are str(uuid.uuid4()): anything else is not looked up (and a NUL, which
    PostgreSQL refuses in text, never reaches the database)."""
    try:
        return str(uuid.UUID(order_id)) == order_id
    except ValueError:
        return False
