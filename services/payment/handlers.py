"""Payment's domain: authorize an order's total, refund it to compensate. Plain functions that
take their dependencies; the Celery tasks only turn wire data into these calls.

The order's `payments` row is where an authorization and its refund meet, whatever order they
arrive in. Authorize claims it (`authorizing`) before calling the gateway. A refund, holding
the row's lock, refunds what the gateway charged for the order, or else voids the row; an
authorization that comes back to a void row gives its charge back at once."""
from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from contracts.messages import AuthorizePayment, PaymentAuthorized, RefundPayment
from contracts.names import Task
from runtime.db import utcnow
from runtime.inbox import once
from runtime.outcome import StepOutcome
from services.payment.gateway import Authorization, Gateway
from services.payment.models import Inbox, Payment

INBOX = Inbox.__table__

AUTHORIZE, REFUND = Task.AUTHORIZE_PAYMENT, Task.REFUND_PAYMENT
GONE = ("void", "refunding", "refunded")

# Core statements, built once: these run for every order (see runtime/inbox.py)
PAYMENTS = Payment.__table__
_LOCK = select(PAYMENTS).where(PAYMENTS.c.order_id == bindparam("id")).with_for_update()
_INSERT = insert(PAYMENTS)
_SET = update(PAYMENTS).where(PAYMENTS.c.order_id == bindparam("id"))


def authorization_key(order_id: str) -> str:
    return f"{order_id}:{AUTHORIZE}"


def refund_key(order_id: str) -> str:
    return f"{order_id}:{REFUND}"


def authorize(msg: AuthorizePayment, db: Engine, gateway: Gateway) -> StepOutcome:
    order = msg.order

    def call_gateway() -> Authorization | None:
        if not _claim(db, msg):
            return None  # the saga gave up on this order and refunded it: never charge now
        auth = gateway.authorize(token=msg.payment_token, amount_cents=order.total_cents,
                                 currency=order.currency,
                                 idempotency_key=authorization_key(order.order_id))
        if auth.approved and _status(db, order.order_id) in GONE:
            # voided while we were at the gateway: give it back
            gateway.refund(authorization_id=str(auth.authorization_id),
                           amount_cents=order.total_cents,
                           idempotency_key=refund_key(order.order_id))
            return None
        return auth

    def record(conn: Connection, auth: Authorization | None) -> StepOutcome:
        payment = conn.execute(_LOCK, {"id": order.order_id}).one()  # claimed above
        if auth is None or payment.status in GONE:
            return StepOutcome.failed("cancelled", why="the order was already compensated")
        if not auth.approved:
            conn.execute(_SET, {"id": order.order_id, "status": "declined"})
            return StepOutcome.failed("payment_declined", decline_code=auth.decline_code)
        conn.execute(_SET, {"id": order.order_id, "status": "authorized",
                            "authorization_id": auth.authorization_id})
        output = PaymentAuthorized(order=order, authorization_id=str(auth.authorization_id),
                                   amount_cents=order.total_cents)
        return StepOutcome.ok(output, authorization_id=auth.authorization_id,
                              amount_cents=order.total_cents)

    return once(db, INBOX, order.order_id, AUTHORIZE, record, call_gateway)


def refund(msg: RefundPayment, db: Engine, gateway: Gateway) -> StepOutcome:
    def call_gateway() -> tuple[str, int] | None:
        held = _hold_or_void(db, msg.order_id, gateway)
        if held is None:
            return None
        refund_id = gateway.refund(authorization_id=held[0], amount_cents=held[1],
                                   idempotency_key=refund_key(msg.order_id))
        return refund_id, held[1]

    def record(conn: Connection, refunded: tuple[str, int] | None) -> StepOutcome:
        if refunded is None:
            return StepOutcome.ok(refunded=False, why="nothing was authorized")
        refund_id, amount_cents = refunded
        conn.execute(_SET, {"id": msg.order_id, "status": "refunded", "refund_id": refund_id,
                            "refunded_at": utcnow()})
        return StepOutcome.ok(refunded=True, refund_id=refund_id, amount_cents=amount_cents)

    return once(db, INBOX, msg.order_id, REFUND, record, call_gateway)


def _claim(db: Engine, msg: AuthorizePayment) -> bool:
    """Claim the order's payment row for this authorization; False if the order is void."""
    order = msg.order
    try:
        with db.begin() as conn:
            payment = conn.execute(_LOCK, {"id": order.order_id}).first()
            if payment is None:
                conn.execute(_INSERT, _row(order.order_id, "authorizing", order.total_cents,
                                           order.currency))
                return True
            return payment.status not in GONE
    except IntegrityError:  # a refund voided it at this very instant
        return _status(db, order.order_id) not in GONE


def _hold_or_void(db: Engine, order_id: str, gateway: Gateway) -> tuple[str, int] | None:
    """What there is to refund: (authorization, amount), or None after voiding the order."""
    with db.begin() as conn:
        payment = conn.execute(_LOCK, {"id": order_id}).first()
        if payment is None:
            conn.execute(_INSERT, _row(order_id, "void", 0, "EUR"))
            return None
        if payment.status in ("authorized", "refunding"):
            held = str(payment.authorization_id), payment.amount_cents
        elif payment.status == "authorizing":
            # in flight, or its worker died: the gateway knows whether it charged. Asked under
            # the row's lock, so an authorization finishing now sees our decision (`_status`).
            found = gateway.find(idempotency_key=authorization_key(order_id))
            if found is None or found.authorization_id is None:
                conn.execute(_SET, {"id": order_id, "status": "void"})
                return None
            held = found.authorization_id, found.amount_cents
        else:
            return None  # declined, void, refunded: nothing held
        # Decided, and said so in the row: an authorization still in flight finds it gone and
        # gives its charge back instead of handing the order on to the next step.
        conn.execute(_SET, {"id": order_id, "status": "refunding", "authorization_id": held[0]})
        return held


def _status(db: Engine, order_id: str) -> str | None:
    """Read under the row's lock: a refund deciding right now is waited for."""
    with db.begin() as conn:
        payment = conn.execute(_LOCK, {"id": order_id}).first()
        return None if payment is None else str(payment.status)


def _row(order_id: str, status: str, amount_cents: int, currency: str) -> dict[str, object]:
    return {"order_id": order_id, "status": status, "amount_cents": amount_cents,
            "currency": currency, "authorization_id": None, "refund_id": None,
            "created_at": utcnow(), "refunded_at": None}
