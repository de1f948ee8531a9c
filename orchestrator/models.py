"""The orchestrator's own tables: the orders with their saga state, the timeline, the outbox."""
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import JSON, ForeignKey, Index, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.db import UtcDateTime, utcnow
from runtime.deadletters import DeadLetterMixin

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    # every model here is a plain table: Core statements (insert, update) take it as one
    __table__: ClassVar[Table]


class CatalogItem(Base):
    __tablename__ = "catalog"
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # pending | confirmed | failed | cancelled
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(64))
    customer_email: Mapped[str] = mapped_column(String(320))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    total_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    # a sandbox token; a real deployment would hold the gateway's payment-method reference here
    payment_token: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # saga bookkeeping: compensations still to run (next first) and those done
    compensating: Mapped[list[str]] = mapped_column(JSON, default=list)
    compensated: Mapped[list[str]] = mapped_column(JSON, default=list)
    needs_attention: Mapped[bool] = mapped_column(default=False)
    closed: Mapped[bool] = mapped_column(default=False, server_default="0")
    redrives: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # the last time the saga heard from a step or acted: what the sweeper measures stalls by
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow,
                                                 onupdate=utcnow)
    # when it reached its status, once terminal (confirmed, failed, cancelled): GET /metrics
    # measures orders from POST to here
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # the W3C traceparent of its POST, when tracing is on: the saga's messages join that trace
    trace_parent: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index("orders_open", "closed", "updated_at"),
                      # GET /orders: newest first, (created_at, id) as the cursor
                      Index("orders_newest_first", "created_at", "id"),
                      Index("orders_ended", "ended_at"),
                      Index("orders_needing_attention", "needs_attention"))


class SagaEvent(Base):
    """The timeline: one row per thing a step reported, in the order the saga learnt it."""

    __tablename__ = "saga_events"
    __table_args__ = (UniqueConstraint("order_id", "name", "status", "attempt",
                                       name="one_event_per_attempt"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int]
    reason: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Outbox(Base):
    """A message owed to the broker, written in the same transaction as the decision to send it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("outbox_unsent", "sent_at", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    task: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(default=0)


class DeadLetter(DeadLetterMixin, Base):
    __tablename__ = "dead_letters"


class DeadLetterReport(Base):
    """Every process's dead letters, as each reported them (runtime.reporting): GET /dead-letters.
    The message itself stays in its process's own table, where its CLI re-drives it."""

    __tablename__ = "dead_letter_reports"
    __table_args__ = (UniqueConstraint("service", "dead_letter_id",
                                       name="one_report_per_dead_letter"),
                      Index("dead_letter_reports_newest_first", "created_at", "id"))
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(32))
    dead_letter_id: Mapped[int]
    task: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
