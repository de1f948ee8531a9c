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
    """The one e-mail an order gets: the primary key is the order, so there is never a second.
    Claimed (`sending`) before it goes out, so a confirmation and a failure notice racing for
    one order cannot both be sent."""

    __tablename__ = "mails"
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # confirmation | failure_notice
    status: Mapped[str] = mapped_column(String(16), server_default="sent")  # sending|sent|rejected
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(255))
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class DeadLetter(DeadLetterMixin, Base):
    __tablename__ = "dead_letters"
