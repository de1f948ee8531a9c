"""The card gateway: a small interface, and the sandbox that stands in for the real one the way
real gateways offer a test mode. Outcomes by token as documented in INTERFACE.md."""
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from contracts.runtime.step import RetryableError
from contracts.runtime.store import reader
from services.payment.models import SandboxCall


class GatewayTimeout(RetryableError):
    exhausted_reason = "payment_unavailable"


@dataclass(frozen=True)
class Authorization:
    approved: bool
    authorization_id: str | None = None
    decline_code: str | None = None
    amount_cents: int = 0


class Gateway(Protocol):
    def authorize(self, *, token: str, amount_cents: int, currency: str,
                  idempotency_key: str) -> Authorization: ...

    def refund(self, *, authorization_id: str, amount_cents: int, idempotency_key: str) -> str: ...

    def find(self, *, idempotency_key: str) -> Authorization | None:
        """The authorization a request with this key made, if any (a crash may have kept us
        from recording it)."""


DECLINES = {
    "tok_chargeDeclined": "card_declined",
    "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
}
APPROVES = {"tok_visa", "tok_gatewayFlaky"}
FLAKY_TIMEOUTS = {"tok_gatewayFlaky": 2, "tok_gatewayDown": None}  # None: every attempt


class SandboxGateway:
    """Honours idempotency keys like a real gateway: a repeated key replays the first answer."""

    def __init__(self, sessions: sessionmaker, latency_ms: int = 0,  # type: ignore[type-arg]
                 timeout_ms: int = 200) -> None:
        self.sessions = sessions
        self.latency_s = latency_ms / 1000
        self.timeout_s = timeout_ms / 1000

    def authorize(self, *, token: str, amount_cents: int, currency: str,
                  idempotency_key: str) -> Authorization:
        time.sleep(self.latency_s)
        with self._call(idempotency_key, "authorize", token, amount_cents) as call:
            if call.result not in ("approved", "declined"):
                call.attempts += 1
                timeouts = FLAKY_TIMEOUTS.get(token, 0)
                if timeouts is None or call.attempts <= timeouts:
                    call.result = "timeout"
                elif token in APPROVES:
                    call.result, call.reference = "approved", f"auth_{uuid.uuid4().hex[:20]}"
                else:
                    call.result = "declined"
                    call.decline_code = DECLINES.get(token, "invalid_token")
            result, reference, decline_code = call.result, call.reference, call.decline_code
        if result == "timeout":
            time.sleep(self.timeout_s)
            raise GatewayTimeout(f"gateway timed out after {self.timeout_s:.2f}s")
        return Authorization(result == "approved", reference, decline_code, amount_cents)

    def find(self, *, idempotency_key: str) -> Authorization | None:
        # a read: it must not wait for the SQLite write lock its caller may hold
        with Session(reader(self.sessions.kw["bind"])) as session, session.begin():
            call = session.get(SandboxCall, idempotency_key)
            if call is None or call.result != "approved":
                return None
            return Authorization(True, call.reference, None, call.amount_cents)

    def refund(self, *, authorization_id: str, amount_cents: int, idempotency_key: str) -> str:
        time.sleep(self.latency_s)
        with self._call(idempotency_key, "refund", None, amount_cents) as call:
            if call.result != "refunded":
                call.attempts += 1
                call.result, call.reference = "refunded", f"re_{uuid.uuid4().hex[:20]}"
            return str(call.reference)

    @contextmanager
    def _call(self, key: str, kind: str, token: str | None, amount_cents: int
              ) -> Iterator[SandboxCall]:
        """The sandbox's row for one idempotency key, committed when the block ends: the
        gateway's side of a call stands whatever the caller does next."""
        try:
            with self.sessions.begin() as session:
                call = session.get(SandboxCall, key, with_for_update=True)
                if call is None:
                    call = SandboxCall(idempotency_key=key, kind=kind, token=token,
                                       amount_cents=amount_cents, attempts=0, result="new")
                    session.add(call)
                yield call
        except IntegrityError as error:
            # the same key in flight twice at once: a real gateway answers "try again"
            raise GatewayTimeout("concurrent request with the same idempotency key") from error
