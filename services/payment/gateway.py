"""The card gateway: a small interface, and the sandbox that stands in for the real one the way
real gateways offer a test mode. Outcomes by token as documented in docs/interface.md."""
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from runtime.db import reader, utcnow
from runtime.retries import RetryableError
from services.payment.models import SandboxCall


class GatewayTimeout(RetryableError):
    """The gateway did not answer in time: worth another try with the same idempotency key."""


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


@dataclass(frozen=True)
class Call:
    """The sandbox's record of one idempotency key."""

    kind: str
    token: str | None
    amount_cents: int
    attempts: int = 0
    result: str = "new"  # approved | declined | timeout | refunded
    reference: str | None = None
    decline_code: str | None = None


CALLS = SandboxCall.__table__
_GET = select(CALLS).where(CALLS.c.idempotency_key == bindparam("key")).with_for_update()
_INSERT = insert(CALLS)
_UPDATE = update(CALLS).where(CALLS.c.idempotency_key == bindparam("key"))


class SandboxGateway:
    """Honours idempotency keys like a real gateway: a repeated key replays the first answer."""

    def __init__(self, db: Engine, latency_ms: int = 0, timeout_ms: int = 200) -> None:
        self.db = db
        self.latency_s = latency_ms / 1000
        self.timeout_s = timeout_ms / 1000

    def authorize(self, *, token: str, amount_cents: int, currency: str,
                  idempotency_key: str) -> Authorization:
        time.sleep(self.latency_s)

        def answer(call: Call) -> Call:
            if call.result in ("approved", "declined"):
                return call  # a replay
            attempts = call.attempts + 1
            timeouts = FLAKY_TIMEOUTS.get(token, 0)
            if timeouts is None or attempts <= timeouts:
                return replace(call, attempts=attempts, result="timeout")
            if token in APPROVES:
                return replace(call, attempts=attempts, result="approved",
                               reference=f"auth_{uuid.uuid4().hex[:20]}")
            return replace(call, attempts=attempts, result="declined",
                           decline_code=DECLINES.get(token, "invalid_token"))

        call = self._call(idempotency_key, Call("authorize", token, amount_cents), answer)
        if call.result == "timeout":
            time.sleep(self.timeout_s)
            raise GatewayTimeout(f"gateway timed out after {self.timeout_s:.2f}s")
        return Authorization(call.result == "approved", call.reference, call.decline_code,
                             amount_cents)

    def find(self, *, idempotency_key: str) -> Authorization | None:
        # a read: it must not wait for the SQLite write lock its caller may hold
        with reader(self.db).connect() as conn:
            row = conn.execute(_GET, {"key": idempotency_key}).first()
        if row is None or row.result != "approved":
            return None
        return Authorization(True, row.reference, None, row.amount_cents)

    def refund(self, *, authorization_id: str, amount_cents: int, idempotency_key: str) -> str:
        time.sleep(self.latency_s)

        def answer(call: Call) -> Call:
            if call.result == "refunded":
                return call
            return replace(call, attempts=call.attempts + 1, result="refunded",
                           reference=f"re_{uuid.uuid4().hex[:20]}")

        return str(self._call(idempotency_key, Call("refund", None, amount_cents), answer)
                   .reference)

    def _call(self, key: str, new: Call, answer: Callable[[Call], Call]) -> Call:
        """The sandbox's row for one idempotency key, moved on by `answer` and committed when
        this returns: the gateway's side of a call stands whatever the caller does next."""
        try:
            with self.db.begin() as conn:
                row = conn.execute(_GET, {"key": key}).first()
                call = new if row is None else Call(
                    row.kind, row.token, row.amount_cents, row.attempts, row.result,
                    row.reference, row.decline_code)
                after = answer(call)
                values = asdict(after)
                if row is None:
                    conn.execute(_INSERT, {**values, "idempotency_key": key,
                                           "created_at": utcnow()})
                elif after != call:
                    conn.execute(_UPDATE, {**values, "key": key})
        except IntegrityError as error:
            # the same key in flight twice at once: a real gateway answers "try again"
            raise GatewayTimeout("concurrent request with the same idempotency key") from error
        return after
