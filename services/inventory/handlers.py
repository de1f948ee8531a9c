"""Inventory's domain: reserve an order's lines all or nothing, release them to compensate."""
import uuid
from collections import Counter

from sqlalchemy import Connection, Engine, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import OrderLine, PaymentAuthorized, ReleaseStock, StockReserved
from contracts.names import Task
from runtime.db import utcnow
from runtime.inbox import once_in_db
from runtime.outcome import StepOutcome
from runtime.retries import RetryableError
from services.inventory.models import Inbox, Reservation, Stock

DEMO_STOCK = {"BOOK-1": 1000, "MUG-1": 1000, "LIMITED-1": 10, "SOLDOUT-1": 0}

# Core statements, built once: these run for every order (see runtime/inbox.py)
STOCK, RESERVATIONS, INBOX = Stock.__table__, Reservation.__table__, Inbox.__table__
_TAKE = update(STOCK).where(STOCK.c.sku == bindparam("line_sku"),
                            STOCK.c.available >= bindparam("line_quantity")) \
    .values(available=STOCK.c.available - bindparam("line_quantity"))
_PUT_BACK = update(STOCK).where(STOCK.c.sku == bindparam("line_sku")) \
    .values(available=STOCK.c.available + bindparam("line_quantity"))
_LOCK = select(RESERVATIONS).where(RESERVATIONS.c.order_id == bindparam("id")).with_for_update()
# INSERT ... ON CONFLICT DO NOTHING: one statement where a lock, a savepoint and an insert were
# (RETURNING says whether it inserted: psycopg's rowcount does not)
_INSERT_NEW = {name: dialect.insert(RESERVATIONS).on_conflict_do_nothing()
               .returning(RESERVATIONS.c.order_id)
               for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))}
_SET = update(RESERVATIONS).where(RESERVATIONS.c.order_id == bindparam("id"))
_DELETE = delete(RESERVATIONS).where(RESERVATIONS.c.order_id == bindparam("id"))


def wanted(lines: list[OrderLine]) -> dict[str, int]:
    """Quantities per SKU, in SKU order so concurrent orders lock rows in the same order."""
    counts: Counter[str] = Counter()
    for line in lines:
        counts[line.sku] += line.quantity
    return dict(sorted(counts.items()))


def take(conn: Connection, lines: dict[str, int]) -> str | None:
    """Decrement every line or none; returns the first SKU that is short."""
    savepoint = conn.begin_nested()
    for sku, quantity in lines.items():
        if conn.execute(_TAKE, {"line_sku": sku, "line_quantity": quantity}).rowcount != 1:
            savepoint.rollback()
            return sku
    savepoint.commit()
    return None


class ReservationInFlight(RetryableError):
    """A reservation of this order is committing right now: release it once it has."""


def reserve(msg: PaymentAuthorized, db: Engine) -> StepOutcome:
    order = msg.order
    lines = wanted(order.items)

    def record(conn: Connection) -> StepOutcome:
        # The reservation row is where a reserve and a release of one order meet: whichever
        # writes it first wins, on PostgreSQL too, where each would otherwise miss the other.
        reservation_id = f"res_{uuid.uuid4().hex[:20]}"
        if not _insert(conn, order.order_id, "reserved", reservation_id, lines):
            # the saga gave up on this order and released it: never take stock now
            return StepOutcome.failed("cancelled", why="the order was already compensated")
        short = take(conn, lines)
        if short is not None:
            conn.execute(_DELETE, {"id": order.order_id})
            return StepOutcome.failed("out_of_stock", sku=short, requested=lines[short])
        output = StockReserved(order=order, authorization_id=msg.authorization_id,
                               reservation_id=reservation_id)
        return StepOutcome.ok(output, reservation_id=reservation_id, lines=lines)

    return once_in_db(db, INBOX, order.order_id, Task.RESERVE_STOCK, record)


def release(msg: ReleaseStock, db: Engine) -> StepOutcome:
    def record(conn: Connection) -> StepOutcome:
        reservation = conn.execute(_LOCK, {"id": msg.order_id}).first()
        if reservation is None:
            # leave a marker so a reserve still on its way finds the order released
            if not _insert(conn, msg.order_id, "released", f"void_{uuid.uuid4().hex[:20]}", {}):
                raise ReservationInFlight("a reservation for this order is being written")
            return StepOutcome.ok(released=False, why="nothing reserved")
        if reservation.status != "reserved":
            return StepOutcome.ok(released=False, why="nothing reserved")
        for sku, quantity in sorted(reservation.lines.items()):
            conn.execute(_PUT_BACK, {"line_sku": sku, "line_quantity": quantity})
        conn.execute(_SET, {"id": msg.order_id, "status": "released", "released_at": utcnow()})
        return StepOutcome.ok(released=True, lines=reservation.lines)

    return once_in_db(db, INBOX, msg.order_id, Task.RELEASE_STOCK, record)


def _insert(conn: Connection, order_id: str, status: str, reservation_id: str,
            lines: dict[str, int]) -> bool:
    """False if the order already has a reservation row. One that is committing right now:
    PostgreSQL waits for it and then inserts nothing (SQLite has one writer at a time)."""
    inserted = conn.execute(_INSERT_NEW[conn.dialect.name], {
        "order_id": order_id, "status": status, "lines": lines, "reservation_id": reservation_id,
        "created_at": utcnow(), "released_at": None})
    return inserted.first() is not None


def seed(sessions: "sessionmaker[Session]", stock: dict[str, int] = DEMO_STOCK) -> None:
    """The demo catalog's stock, on first start only: a restart never refills the shelves."""
    with sessions.begin() as session:
        if session.scalars(select(Stock.sku).limit(1)).first() is None:
            session.add_all(Stock(sku=sku, available=n) for sku, n in stock.items())
