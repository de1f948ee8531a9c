"""What the operator's pages (orchestrator.ui) say in words: a failure reason as a sentence, an
amount of money, a time in UTC and its age, a duration. Pure functions, also the templates'
filters."""
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# The reason codes the steps and the saga produce (services/*/handlers.py, runtime/step.py,
# contracts/messages.py, orchestrator/saga.py and sweeper.py), and the gateway's decline codes
# (services/payment/gateway.py). An unknown code is shown as itself: a new one is never hidden.
REASONS = {
    "payment_declined": "The payment was declined.",
    "card_declined": "The card was declined by its bank.",
    "insufficient_funds": "The card has insufficient funds.",
    "invalid_token": "The payment token is not one the gateway accepts.",
    "out_of_stock": "An item is out of stock.",
    "payment_unavailable": "The payment gateway did not answer, even after every retry.",
    "unavailable": "A service did not answer, even after every retry.",
    "timeout": "A step timed out.",
    "timed_out": "The order was still pending past the saga's deadline, so it was undone.",
    "cancelled": "The order was cancelled on request.",
    "poison_message": "A step kept crashing on this order's message.",
    "invalid_message": "A step was sent a message it could not read.",
    "stuck": "A step keeps failing and asks for a person (it goes on retrying).",
    "other_mail_sent": "Another e-mail about this order had already gone out.",
    "mail_rejected": "The mail server refused the e-mail for good.",
    "failed": "A step failed.",
}
# contracts.messages.crash_reason: `payment.authorize` crashed → `payment_error`
CRASHED = "_error"


def reason_words(code: str | None) -> str:
    """The sentence for a reason code; the code itself when it has none."""
    if code is None:
        return ""
    if code in REASONS:
        return REASONS[code]
    service, _, rest = code.rpartition(CRASHED)
    if service and not rest and service.isidentifier():
        return f"The {service} step crashed; the {service} service's log has the traceback."
    return code


def why(reason: str | None, detail: Mapping[str, Any] | None = None) -> str:
    """The order's reason in words, made precise by what the step that failed reported."""
    said = reason_words(reason)
    detail = detail or {}
    decline = detail.get("decline_code")
    if reason == "payment_declined" and isinstance(decline, str):
        return f"The payment was declined: {_lower_first(reason_words(decline))}"
    if reason == "out_of_stock" and isinstance(detail.get("sku"), str):
        asked = detail.get("requested", "?")
        return f"An item is out of stock: {detail['sku']} ({asked} asked for)."
    if reason == "cancelled" and isinstance(detail.get("reason"), str):
        return f"The order was cancelled on request: “{detail['reason']}”."
    return said


def _lower_first(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:]


def money(cents: int, currency: str) -> str:
    """`EUR 12.50`"""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{currency} {sign}{whole}.{part:02d}"


def iso(at: datetime | None, ms: bool = False) -> str:
    """UTC, ISO 8601, to the second (or millisecond): `2026-05-01T12:03:04Z`."""
    if at is None:
        return ""
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    return at.isoformat(timespec="milliseconds" if ms else "seconds").replace("+00:00", "Z")


def age(at: datetime, now: datetime | None = None) -> str:
    """How long ago, roughly: `just now`, `42 s ago`, `3 min ago`, `5 h ago`, `2 days ago`."""
    now = now or datetime.now(UTC)
    seconds = (now - (at if at.tzinfo else at.replace(tzinfo=UTC))).total_seconds()
    if seconds < 0:
        return "in the future"  # another clock's time: say so rather than a negative age
    if seconds < 5:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            plural = "s" if unit == "day" and count > 1 else ""
            return f"{count} {unit}{plural} ago"
    return f"{int(seconds)} s ago"


def duration(seconds: float) -> str:
    """`85 ms`, `1.24 s`, `3 min 4 s`, `2 h 5 min`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
