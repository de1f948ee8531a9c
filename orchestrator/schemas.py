"""The HTTP API's request and response bodies (docs/interface.md). Private to the orchestrator."""
import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, EmailStr, Field

# No control characters (C0, DEL, C1): PostgreSQL refuses a NUL in text, and none of the others
# belongs in a SKU or a card token either.
NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"


class OrderLineIn(BaseModel):
    sku: str = Field(min_length=1, max_length=64, pattern=NO_CONTROLS, examples=["BOOK-1"])
    quantity: int = Field(ge=1, le=1000)


class OrderIn(BaseModel):
    customer_email: EmailStr
    items: list[OrderLineIn] = Field(min_length=1, max_length=100)
    # the payment service stores the token in a VARCHAR(64)
    payment_token: str = Field(min_length=1, max_length=64, pattern=NO_CONTROLS,
                               examples=["tok_visa"])

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class CancelIn(BaseModel):
    reason: str | None = Field(None, max_length=200, pattern=NO_CONTROLS,
                               description="why, for the timeline (the customer is not shown it)")


class StepOut(BaseModel):
    name: str
    status: str
    at: datetime
    attempt: int
    reason: str | None
    detail: dict[str, Any]


class OrderSummary(BaseModel):
    """An order as GET /orders lists it: everything but its timeline."""

    id: str
    status: str
    reason: str | None
    needs_attention: bool
    customer_email: str
    items: list[OrderLineIn]
    total_cents: int
    currency: str
    created_at: datetime
    updated_at: datetime


class OrderOut(OrderSummary):
    steps: list[StepOut]


class OrderPage(BaseModel):
    orders: list[OrderSummary]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next (older) page; null on the last one")


class DeadLetterOut(BaseModel):
    """A message a process could not process, as it reported it to the saga. The message itself
    stays in that process's database: `python -m services.<service> dead-letters retry <id>`."""

    service: str = Field(description="payment, inventory, notify, or saga (the orchestrator)")
    dead_letter_id: int = Field(description="its id in that process's dead letters")
    task: str
    order_id: str | None
    error: str
    created_at: datetime
    reported_at: datetime


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page")


class ErrorOut(BaseModel):
    """Every error the API answers (4xx, 5xx): JSON, never plain text."""

    detail: str = Field(description="what went wrong, for a person")
    error_id: str | None = Field(None, description="on a 500 or 503: the id in the API's log line")


class ValidationErrorOut(BaseModel):
    """A 422: each field that failed, as FastAPI names it (`input` shortened to 64 characters)."""

    detail: list[dict[str, Any]]


class HealthOut(BaseModel):
    database: str = Field(description='"ok", or "unreachable: <error class>"')
    broker: str = Field(description='"ok", or "unreachable: <error class>"')
