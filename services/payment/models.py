from datetime import datetime
from pathlib import Path
from typing import ClassVar

from sqlalchemy import String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.db import UtcDateTime, utcnow
from runtime.deadletters import DeadLetterMixin
from runtime.inbox import InboxMixin

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    # every model here is a plain table: Core statements (insert, update) take it as one
    __table__: ClassVar[Table]


class Payment(Base):
    """An order's payment here: where an authorization and its refund meet. Claimed as
    `authorizing` before the gateway is called; `void` when the refund came first."""

    __tablename__ = "payments"
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    authorization_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    # authorizing | authorized | declined | refunding | refunded | void
    status: Mapped[str] = mapped_column(String(16))
    refund_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    refunded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SandboxCall(Base):
    """The sandbox gateway's own ledger, one row per idempotency key (a real gateway keeps this
    on its side; the sandbox keeps it here so tests can count charges from outside)."""

    __tablename__ = "sandbox_gateway_calls"
    idempotency_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # authorize | refund
    token: Mapped[str | None] = mapped_column(String(64))
    amount_cents: Mapped[int]
    attempts: Mapped[int] = mapped_column(default=0)
    result: Mapped[str] = mapped_column(String(16))  # approved | declined | timeout | refunded
    reference: Mapped[str | None] = mapped_column(String(64))
    decline_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class DeadLetter(DeadLetterMixin, Base):
    __tablename__ = "dead_letters"
