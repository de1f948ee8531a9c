"""Reserve and release against a real database, including concurrent buyers of a short SKU."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from contracts.messages import OrderLine, PaymentAuthorized, ReleaseStock, SagaOrder
from services.inventory import handlers
from services.inventory.models import MIGRATIONS, Reservation, Stock


@pytest.fixture
def sessions(migrated):
    sessions = migrated(MIGRATIONS)
    handlers.seed(sessions)
    return sessions


@pytest.fixture
def db(sessions):
    return sessions.kw["bind"]


def paid(order_id: str, *lines: tuple[str, int]) -> PaymentAuthorized:
    order = SagaOrder(order_id=order_id, customer_email="ada@example.com", total_cents=1,
                      currency="EUR", items=[OrderLine(sku=s, quantity=q) for s, q in lines])
    return PaymentAuthorized(order=order, authorization_id="auth_1", amount_cents=1)


def available(sessions, sku: str) -> int:
    with sessions.begin() as s:
        return s.get(Stock, sku).available


def test_seeding_twice_never_refills_the_shelves(sessions, db):
    handlers.reserve(paid("o-1", ("LIMITED-1", 3)), db)
    handlers.seed(sessions)
    assert available(sessions, "LIMITED-1") == 7


def test_a_reservation_takes_every_line_and_a_repeat_takes_nothing_more(sessions, db):
    first = handlers.reserve(paid("o-1", ("BOOK-1", 2), ("MUG-1", 1), ("BOOK-1", 1)), db)
    again = handlers.reserve(paid("o-1", ("BOOK-1", 2), ("MUG-1", 1), ("BOOK-1", 1)), db)
    assert first.succeeded and again == first
    assert first.detail["lines"] == {"BOOK-1": 3, "MUG-1": 1}
    assert (available(sessions, "BOOK-1"), available(sessions, "MUG-1")) == (997, 999)


def test_one_short_line_reserves_nothing_at_all(sessions, db):
    outcome = handlers.reserve(paid("o-1", ("BOOK-1", 1), ("SOLDOUT-1", 1)), db)
    assert (outcome.succeeded, outcome.reason, outcome.detail["sku"]) == (
        False, "out_of_stock", "SOLDOUT-1")
    assert available(sessions, "BOOK-1") == 1000
    with sessions.begin() as s:
        assert s.get(Reservation, "o-1") is None


def test_release_puts_the_stock_back_once(sessions, db):
    handlers.reserve(paid("o-1", ("LIMITED-1", 4)), db)
    first = handlers.release(ReleaseStock(order_id="o-1"), db)
    again = handlers.release(ReleaseStock(order_id="o-1"), db)
    assert first.detail["released"] is True and again == first
    assert available(sessions, "LIMITED-1") == 10


def test_releasing_what_was_never_reserved_is_a_no_op(sessions, db):
    outcome = handlers.release(ReleaseStock(order_id="never"), db)
    assert outcome.succeeded and outcome.detail["released"] is False
    assert available(sessions, "LIMITED-1") == 10


def test_concurrent_buyers_never_oversell(sessions, db):
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda i: handlers.reserve(paid(f"o-{i}", ("LIMITED-1", 1)),
                                                            db), range(30)))
    assert sum(o.succeeded for o in outcomes) == 10
    assert {o.reason for o in outcomes if not o.succeeded} == {"out_of_stock"}
    assert available(sessions, "LIMITED-1") == 0


def test_a_reservation_arriving_after_the_release_takes_nothing(sessions, db):
    handlers.release(ReleaseStock(order_id="o-1"), db)
    late = handlers.reserve(paid("o-1", ("LIMITED-1", 2)), db)
    assert (late.succeeded, late.reason) == (False, "cancelled")
    assert available(sessions, "LIMITED-1") == 10


def test_a_release_racing_its_reservation_never_leaks_stock(sessions, db):
    def race(i: int) -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            reserve = pool.submit(handlers.reserve, paid(f"r-{i}", ("BOOK-1", 1)), db)
            release = pool.submit(handlers.release, ReleaseStock(order_id=f"r-{i}"), db)
            reserve.result()
            try:
                release.result()
            except handlers.ReservationInFlight:  # retried by the worker: do what it would
                handlers.release(ReleaseStock(order_id=f"r-{i}"), db)
    for i in range(20):
        race(i)
    # whichever came first, every order ends released: nothing taken from the shelf
    assert available(sessions, "BOOK-1") == 1000
