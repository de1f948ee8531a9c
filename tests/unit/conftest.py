"""The orchestrator's database for in-process tests: a SQLite file migrated by Alembic, with
one order placed."""
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import orders
from orchestrator.catalog import seed
from orchestrator.models import MIGRATIONS
from orchestrator.schemas import OrderIn
from runtime.db import Database
from runtime.migrations import migrate


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/orchestrator.db"
    migrate(url, MIGRATIONS)
    database = Database.at(url)
    seed(database.sessions)
    yield database
    database.dispose()


@pytest.fixture
def order_id(db: Database) -> str:
    return orders.place(db.engine, OrderIn.model_validate({
        "customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 1}],
        "payment_token": "tok_visa"}), None).order_id
