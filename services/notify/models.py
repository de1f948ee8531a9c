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


class Mail(Base):
    """An order's e-mails: one per slot, never a second. The `outcome` slot holds the
    confirmation or the failure notice (never both: the key keeps them exclusive), the
    `cancellation` slot the cancellation notice. Claimed (`sending`) before it goes out, so two
    deliveries racing for one slot cannot both send."""

    __tablename__ = "mails"
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="outcome")
    kind: Mapped[str] = mapped_column(String(32))  # confirmation | failure_notice | cancellation
    status: Mapped[str] = mapped_column(String(16), server_default="sent")  # sending|sent|rejected
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(255))
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class DeadLetter(DeadLetterMixin, Base):
    __tablename__ = "dead_letters"
