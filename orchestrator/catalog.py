"""Pricing: the orchestrator prices every order from its own catalog, never from the client."""
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.models import CatalogItem

DEMO_CATALOG = (
    CatalogItem(sku="BOOK-1", name="A book", price_cents=1299, currency="EUR"),
    CatalogItem(sku="MUG-1", name="A mug", price_cents=899, currency="EUR"),
    CatalogItem(sku="LIMITED-1", name="A limited edition", price_cents=4999, currency="EUR"),
    CatalogItem(sku="SOLDOUT-1", name="Sold out", price_cents=999, currency="EUR"),
)
CURRENCY = "EUR"


class UnknownSku(Exception):
    def __init__(self, index: int, sku: str) -> None:
        super().__init__(f"unknown sku {sku!r} at items[{index}]")
        self.index, self.sku = index, sku


_PRICES = select(CatalogItem.sku, CatalogItem.price_cents) \
    .where(CatalogItem.sku.in_(bindparam("skus", expanding=True)))


def price(conn: Connection, lines: list[tuple[str, int]]) -> int:
    """The total in cents; raises UnknownSku naming the first line the catalog doesn't have."""
    prices = {sku: int(cents) for sku, cents in
              conn.execute(_PRICES, {"skus": sorted({sku for sku, _ in lines})})}
    for index, (sku, _) in enumerate(lines):
        if sku not in prices:
            raise UnknownSku(index, sku)
    return sum(prices[sku] * quantity for sku, quantity in lines)


def seed(sessions: "sessionmaker[Session]") -> None:
    with sessions.begin() as session:
        if session.scalars(select(CatalogItem.sku).limit(1)).first() is None:
            session.add_all(CatalogItem(sku=i.sku, name=i.name, price_cents=i.price_cents,
                                        currency=i.currency) for i in DEMO_CATALOG)
