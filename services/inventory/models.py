from datetime import datetime
from pathlib import Path
from typing import ClassVar

from sqlalchemy import JSON, CheckConstraint, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.db import UtcDateTime, utcnow
from runtime.deadletters import DeadLetterMixin
from runtime.inbox import InboxMixin

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    # every model here is a plain table: Core statements (insert, update) take it as one
    __table__: ClassVar[Table]


class Stock(Base):
    __tablename__ = "stock"
    __table_args__ = (CheckConstraint("available >= 0", name="stock_never_negative"),)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    available: Mapped[int]


class Reservation(Base):
    __tablename__ = "reservations"
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reservation_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # reserved | released
    lines: Mapped[dict[str, int]] = mapped_column(JSON)  # sku -> quantity
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class DeadLetter(DeadLetterMixin, Base):
    __tablename__ = "dead_letters"
