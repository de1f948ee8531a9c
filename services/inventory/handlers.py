"""Inventory's domain: reserve an order's lines all or nothing, release them to compensate."""
import uuid
from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import OrderLine, PaymentAuthorized, ReleaseStock, StockReserved
from contracts.names import Task
from contracts.runtime.inbox import once
from contracts.runtime.step import RetryableError, StepOutcome
from contracts.runtime.store import utcnow
from services.inventory.models import Inbox, Reservation, Stock

DEMO_STOCK = {"BOOK-1": 1000, "MUG-1": 1000, "LIMITED-1": 10, "SOLDOUT-1": 0}


def wanted(lines: list[OrderLine]) -> dict[str, int]:
    """Quantities per SKU, in SKU order so concurrent orders lock rows in the same order."""
    counts: Counter[str] = Counter()
    for line in lines:
        counts[line.sku] += line.quantity
    return dict(sorted(counts.items()))


def take(session: Session, lines: dict[str, int]) -> str | None:
    """Decrement every line or none; returns the first SKU that is short."""
    savepoint = session.begin_nested()
    for sku, quantity in lines.items():
        taken = session.execute(
            update(Stock).where(Stock.sku == sku, Stock.available >= quantity)
            .values(available=Stock.available - quantity))
        if taken.rowcount != 1:
            savepoint.rollback()
            return sku
    savepoint.commit()
    return None


class ReservationInFlight(RetryableError):
    exhausted_reason = "release_blocked"


def reserve(msg: PaymentAuthorized, sessions: sessionmaker) -> StepOutcome:  # type: ignore[type-arg]
    order = msg.order
    lines = wanted(order.items)

    def record(session: Session, _: None) -> StepOutcome:
        # The reservation row is where a reserve and a release of one order meet: whichever
        # writes it first wins, on PostgreSQL too, where each would otherwise miss the other.
        reservation_id = f"res_{uuid.uuid4().hex[:20]}"
        if not _insert(session, Reservation(order_id=order.order_id, status="reserved",
                                            reservation_id=reservation_id, lines=lines)):
            # the saga gave up on this order and released it: never take stock now
            return StepOutcome.failed("cancelled", why="the order was already compensated")
        short = take(session, lines)
        if short is not None:
            session.delete(session.get(Reservation, order.order_id))
            return StepOutcome.failed("out_of_stock", sku=short, requested=lines[short])
        output = StockReserved(order=order, authorization_id=msg.authorization_id,
                               reservation_id=reservation_id)
        return StepOutcome.ok(output, reservation_id=reservation_id, lines=lines)

    return once(sessions, Inbox, order.order_id, Task.RESERVE_STOCK, record)


def release(msg: ReleaseStock, sessions: sessionmaker) -> StepOutcome:  # type: ignore[type-arg]
    def record(session: Session, _: None) -> StepOutcome:
        reservation = session.get(Reservation, msg.order_id, with_for_update=True)
        if reservation is None:
            # leave a marker so a reserve still on its way finds the order released
            marker = Reservation(order_id=msg.order_id, status="released", lines={},
                                 reservation_id=f"void_{uuid.uuid4().hex[:20]}")
            if not _insert(session, marker):
                raise ReservationInFlight("a reservation for this order is being written")
            return StepOutcome.ok(released=False, why="nothing reserved")
        if reservation.status != "reserved":
            return StepOutcome.ok(released=False, why="nothing reserved")
        for sku, quantity in sorted(reservation.lines.items()):
            session.execute(update(Stock).where(Stock.sku == sku)
                            .values(available=Stock.available + quantity))
        reservation.status, reservation.released_at = "released", utcnow()
        return StepOutcome.ok(released=True, lines=reservation.lines)

    return once(sessions, Inbox, msg.order_id, Task.RELEASE_STOCK, record)


def _insert(session: Session, row: Reservation) -> bool:
    """False if the order already has a reservation row (or one is committing right now)."""
    if session.get(Reservation, row.order_id, with_for_update=True) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return False
    return True


def seed(sessions: sessionmaker, stock: dict[str, int] = DEMO_STOCK) -> None:  # type: ignore[type-arg]
    """The demo catalog's stock, on first start only: a restart never refills the shelves."""
    with sessions.begin() as session:
        if session.scalars(select(Stock.sku).limit(1)).first() is None:
            session.add_all(Stock(sku=sku, available=n) for sku, n in stock.items())
