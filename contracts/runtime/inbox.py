"""Run a step's effect at most once per (order, step), keyed in the service's own database."""
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from contracts.runtime.step import StepOutcome
from contracts.runtime.store import inbox_get, reader

T = TypeVar("T")


def once(sessions: sessionmaker, inbox: type, order_id: str, step: str,  # type: ignore[type-arg]
         inside: Callable[[Session, T], StepOutcome],
         outside: Callable[[], T] = lambda: None) -> StepOutcome:  # type: ignore[assignment,return-value]
    """`outside` is the external call (gateway, SMTP), made before the transaction and made
    idempotent by its own key; `inside` writes the effect, and the inbox row commits with it.
    A repeat finds the row and gets the stored outcome back, with no second effect."""
    earlier = stored(sessions, inbox, order_id, step)
    if earlier is not None:
        return earlier
    prepared = outside()
    try:
        with sessions.begin() as session:
            stored_row = inbox_get(session, inbox, order_id, step)
            if stored_row is not None:
                return StepOutcome.model_validate(stored_row)
            outcome = inside(session, prepared)
            session.add(inbox(order_id=order_id, step=step, outcome=outcome.model_dump(mode="json")))
    except IntegrityError:
        # A duplicate delivery ran alongside us and committed first: its outcome is the one.
        earlier = stored(sessions, inbox, order_id, step)
        if earlier is None:
            raise
        return earlier
    return outcome


def stored(sessions: sessionmaker, inbox: type, order_id: str, step: str  # type: ignore[type-arg]
           ) -> StepOutcome | None:
    """The outcome of (order, step) if it ran; also how a step learns its compensation already
    ran (the saga gave up on the order) and it must not act any more."""
    # a read: on SQLite it must not queue for the write lock (the write transaction checks again)
    with Session(reader(sessions.kw["bind"])) as session, session.begin():
        row = inbox_get(session, inbox, order_id, step)
    return None if row is None else StepOutcome.model_validate(row)
