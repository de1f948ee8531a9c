"""Run a step's effect at most once per (order, step), keyed in the service's own database.

Steps run on every message, so this is written with SQLAlchemy Core statements built once per
table, on a plain connection: the ORM's unit of work costs about four times as much per
transaction and nothing here needs it."""
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Insert, Select, Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from contracts.runtime.step import StepOutcome
from contracts.runtime.store import utcnow

T = TypeVar("T")


def once(db: Engine, inbox: type, order_id: str, step: str,
         inside: Callable[[Connection, T], StepOutcome],
         outside: Callable[[], T] = lambda: None) -> StepOutcome:  # type: ignore[assignment,return-value]
    """`outside` is the external call (gateway, SMTP), made before the transaction and made
    idempotent by its own key; `inside` writes the effect, and the inbox row commits with it.
    A repeat finds the row and gets the stored outcome back, with no second effect."""
    table: Table = inbox.__table__  # type: ignore[attr-defined]
    prepared = outside()
    try:
        with db.begin() as conn:
            earlier = stored(conn, table, order_id, step)
            if earlier is not None:
                return earlier
            outcome = inside(conn, prepared)
            conn.execute(_statements(table)[1], {
                "order_id": order_id, "step": step, "outcome": outcome.model_dump(mode="json"),
                "created_at": utcnow()})
    except IntegrityError:
        # A duplicate delivery ran alongside us and committed first: its outcome is the one.
        with db.connect() as conn:
            earlier = stored(conn, table, order_id, step)
        if earlier is None:
            raise
        return earlier
    return outcome


def stored(conn: Connection, inbox: Table, order_id: str, step: str) -> StepOutcome | None:
    """The outcome of (order, step) if it ran."""
    row = conn.execute(_statements(inbox)[0], {"order_id": order_id, "step": step}).first()
    return None if row is None else StepOutcome.model_validate(row.outcome)


@cache
def _statements(inbox: Table) -> tuple[Select[Any], Insert]:
    get = select(inbox.c.outcome).where(inbox.c.order_id == bindparam("order_id"),
                                        inbox.c.step == bindparam("step"))
    return get, insert(inbox)
