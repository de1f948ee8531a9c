"""One model per message. Fields may be added; none may be removed or change meaning."""
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class Message(BaseModel):
    # Unknown fields are ignored so a newer sender never breaks an older worker.
    model_config = ConfigDict(extra="ignore", frozen=True)


class OrderLine(Message):
    sku: str = Field(min_length=1, max_length=64)
    quantity: PositiveInt


class SagaOrder(Message):
    """The order as the saga carries it from step to step (no payment credentials)."""

    order_id: str = Field(min_length=1, max_length=64)
    customer_email: str = Field(min_length=3, max_length=320)
    items: list[OrderLine] = Field(min_length=1)
    total_cents: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


# --- replies to the saga worker --------------------------------------------------------------

StepStatus = Literal["succeeded", "failed", "retrying"]

# reasons with a meaning for the saga
STUCK = "stuck"  # on a retrying reply: the step keeps failing, a person should look
POISON = "poison_message"  # the step's deliveries kept dying mid-run: treat it as a crash


def utcnow() -> datetime:
    return datetime.now(UTC)


class StepReply(Message):
    """What a step tells the saga after its effect is committed: sent to queue `saga` by a step
    that fails, retries, is a compensation or the chain's last step; otherwise handed on."""

    order_id: str
    step: str
    status: StepStatus
    reason: str | None = None
    attempt: int = 1
    at: datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(default_factory=dict)
    # the step crashed rather than answered: it may have half-happened (compensate it too)
    raised: bool = False
    # what the chain's earlier steps did: their replies ride along the chain (ChainMessage) and
    # reach the saga with the first reply a step sends
    earlier: list["StepReply"] = Field(default_factory=list)


# --- the forward chain: each step's output is the next step's input -------------------------

class ChainMessage(Message):
    """A message of the forward chain. A step that succeeds and hands over to the next one does
    not reply to the saga: its reply rides along in `replies`, and the step that ends the chain,
    or stops it (a failure), or retries, sends the saga every reply so far in one message."""

    replies: list[StepReply] = Field(default_factory=list)
    # steps whose success the saga wants to hear at once, not only at the chain's end (its
    # pivot: orchestrator/saga.py); set on the first message and carried on with the replies
    report_at_once: list[str] = Field(default_factory=list)


class AuthorizePayment(ChainMessage):
    """Input of `payment.authorize`, the first step."""

    order: SagaOrder
    payment_token: str = Field(min_length=1)


class PaymentAuthorized(ChainMessage):
    """Output of `payment.authorize`, input of `inventory.reserve`."""

    order: SagaOrder
    authorization_id: str
    amount_cents: int


class StockReserved(ChainMessage):
    """Output of `inventory.reserve`, input of `notify.order_confirmed`."""

    order: SagaOrder
    authorization_id: str
    reservation_id: str


MailKind = Literal["confirmation", "failure_notice", "cancellation"]


class MailSent(Message):
    """Output of the `notify.*` steps, the end of the line."""

    order_id: str
    kind: MailKind
    message_id: str


# --- compensations and the failure notice, sent by the saga ---------------------------------

class RefundPayment(Message):
    order_id: str = Field(min_length=1, max_length=64)


class ReleaseStock(Message):
    order_id: str = Field(min_length=1, max_length=64)


class SendFailureNotice(Message):
    order: SagaOrder
    reason: str
    refunded: bool = False


class SendCancellationNotice(Message):
    order: SagaOrder
    refunded: bool = False


class DeadLetterReport(Message):
    """A process kept a message it could not process: the saga lists it, and flags its order."""

    service: str = Field(min_length=1, max_length=32)
    dead_letter_id: int
    task: str = Field(max_length=128)
    order_id: str | None = Field(default=None, max_length=64)
    error: str
    created_at: datetime


class StepFailed(Message):
    """The errback's message: a step raised and Celery gave up on it."""

    order_id: str
    step: str


def crash_reason(step: str) -> str:
    """The failure reason of an order whose step crashed: `payment.authorize` → `payment_error`."""
    return f"{step.split('.', 1)[0]}_error"


def order_id_of(payload: Any) -> str | None:
    """The order a payload is about, best effort: for logs and dead letters of payloads that
    failed validation."""
    if not isinstance(payload, dict):
        return None
    candidate = payload.get("order_id")
    if candidate is None and isinstance(payload.get("order"), dict):
        candidate = payload["order"].get("order_id")
    return candidate if isinstance(candidate, str) else None
