"""The dead letters of every process, as they report them (runtime.reporting): kept once each,
listed by GET /dead-letters, and put on the timeline of the order each is about, which the saga
then flags for a person (orchestrator.saga.on_dead_letter)."""
import logging

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.messages import DeadLetterReport as Report
from orchestrator import replies, saga
from orchestrator.models import DeadLetterReport
from orchestrator.saga_store import Event
from runtime.db import utcnow

log = logging.getLogger("saga.deadletters")
REPORTS = DeadLetterReport.__table__
PAGE_MAX = 200


def receive(db: Engine, report: Report) -> list[int]:
    """Keep the report (once) and flag its order; returns the outbox rows to publish (none: a
    flagged order waits for a person)."""
    try:
        with db.begin() as conn:
            conn.execute(insert(REPORTS), {**report.model_dump(exclude={"created_at"}),
                                           "created_at": report.created_at,
                                           "reported_at": utcnow()})
    except IntegrityError:
        pass  # reported twice (two replicas, or a mark that did not stick): kept once already
    if report.order_id is None:
        return []
    with db.begin() as conn:
        return replies.apply(conn, report.order_id, [Event(
            report.task, saga.DEAD_LETTERED, None, report.dead_letter_id, report.created_at,
            {"service": report.service, "dead_letter_id": report.dead_letter_id,
             "error": report.error[:500]})])


def page(session: Session, limit: int, before: int | None = None, service: str | None = None,
         order_id: str | None = None) -> tuple[list[DeadLetterReport], int | None]:
    """Newest report first; `before`: the last id of the previous page."""
    query = select(DeadLetterReport)
    if before is not None:
        query = query.where(DeadLetterReport.id < before)
    if service is not None:
        query = query.where(DeadLetterReport.service == service)
    if order_id is not None:
        query = query.where(DeadLetterReport.order_id == order_id)
    found = list(session.scalars(query.order_by(DeadLetterReport.id.desc()).limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    return found, (found[-1].id if more else None)
