"""What the operator's pages read beyond an order page (orders.page, orders.load): the outcomes
of the last hour's orders, and why flagged orders are flagged."""
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from contracts.messages import STUCK
from orchestrator import saga
from orchestrator.models import Order, SagaEvent

RECENT = timedelta(hours=1)


@dataclass(frozen=True)
class Outcomes:
    """How the orders created since `since` stand, by status; failures by reason."""

    since: datetime
    confirmed: int = 0
    cancelled: int = 0
    pending: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason → count, most first

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def total(self) -> int:
        return self.confirmed + self.cancelled + self.pending + self.failed_total


def recent_outcomes(session: Session, now: datetime) -> Outcomes:
    """One GROUP BY over the orders created in the last hour: a range of the index on
    (created_at, id), never a scan of the whole table."""
    since = now - RECENT
    counts: dict[str, int] = {}
    failed: dict[str, int] = {}
    for status, reason, count in session.execute(
            select(Order.status, Order.reason, func.count())
            .where(Order.created_at >= since).group_by(Order.status, Order.reason)):
        counts[status] = counts.get(status, 0) + count
        if status == "failed":
            failed[reason or "failed"] = failed.get(reason or "failed", 0) + count
    return Outcomes(since, counts.get("confirmed", 0), counts.get(saga.CANCELLED, 0),
                    counts.get("pending", 0),
                    dict(sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))))


def attention_causes(session: Session, order_ids: Sequence[str]) -> dict[str, SagaEvent]:
    """For each order, the last timeline entry that can flag it: a failure, a dead letter, a
    step that says it is stuck. One query for the whole page."""
    if not order_ids:
        return {}
    causes: dict[str, SagaEvent] = {}
    for entry in session.scalars(
            select(SagaEvent).where(SagaEvent.order_id.in_(order_ids),
                                    or_(and_(SagaEvent.status == "failed",
                                             # a late step refusing a cancelled order: benign
                                             SagaEvent.reason.is_distinct_from(saga.CANCELLED)),
                                        SagaEvent.status == saga.DEAD_LETTERED,
                                        SagaEvent.reason == STUCK))
            .order_by(SagaEvent.at, SagaEvent.id)):
        causes[entry.order_id] = entry  # the latest wins
    return causes
