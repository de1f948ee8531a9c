"""Payment's domain: authorize an order's total, refund it to compensate. Plain functions that
take their dependencies; the Celery tasks only turn wire data into these calls."""
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import AuthorizePayment, PaymentAuthorized, RefundPayment
from contracts.names import Task
from contracts.runtime.inbox import once, stored
from contracts.runtime.step import StepOutcome
from contracts.runtime.store import utcnow
from services.payment.gateway import Authorization, Gateway
from services.payment.models import Inbox, Payment

AUTHORIZE, REFUND = Task.AUTHORIZE_PAYMENT, Task.REFUND_PAYMENT


def authorization_key(order_id: str) -> str:
    return f"{order_id}:{AUTHORIZE}"


def authorize(msg: AuthorizePayment, sessions: sessionmaker, gateway: Gateway  # type: ignore[type-arg]
              ) -> StepOutcome:
    order = msg.order

    def call_gateway() -> Authorization | None:
        if stored(sessions, Inbox, order.order_id, REFUND) is not None:
            return None  # the saga gave up on this order and refunded it: never charge now
        return gateway.authorize(token=msg.payment_token, amount_cents=order.total_cents,
                                 currency=order.currency,
                                 idempotency_key=authorization_key(order.order_id))

    def record(session: Session, auth: Authorization | None) -> StepOutcome:
        if auth is None:
            return StepOutcome.failed("cancelled", why="the order was already compensated")
        if not auth.approved:
            return StepOutcome.failed("payment_declined", decline_code=auth.decline_code)
        assert auth.authorization_id is not None
        session.add(Payment(order_id=order.order_id, authorization_id=auth.authorization_id,
                            amount_cents=order.total_cents, currency=order.currency,
                            status="authorized"))
        output = PaymentAuthorized(order=order, authorization_id=auth.authorization_id,
                                   amount_cents=order.total_cents)
        return StepOutcome.ok(output, authorization_id=auth.authorization_id,
                              amount_cents=order.total_cents)

    return once(sessions, Inbox, order.order_id, AUTHORIZE, record, call_gateway)


def refund(msg: RefundPayment, sessions: sessionmaker, gateway: Gateway  # type: ignore[type-arg]
           ) -> StepOutcome:
    def call_gateway() -> tuple[str, int] | None:
        # What we recorded, or else what the gateway holds: a crash between its approval and
        # our commit leaves a charge only the gateway knows about.
        with sessions.begin() as session:
            payment = session.get(Payment, msg.order_id)
            held = None if payment is None else (payment.authorization_id, payment.amount_cents)
        if held is None:
            found = gateway.find(idempotency_key=authorization_key(msg.order_id))
            if found is None or found.authorization_id is None:
                return None
            held = (found.authorization_id, found.amount_cents)
        refund_id = gateway.refund(authorization_id=held[0], amount_cents=held[1],
                                   idempotency_key=f"{msg.order_id}:{REFUND}")
        return refund_id, held[1]

    def record(session: Session, refunded: tuple[str, int] | None) -> StepOutcome:
        if refunded is None:
            return StepOutcome.ok(refunded=False, why="nothing was authorized")
        refund_id, amount_cents = refunded
        payment = session.get(Payment, msg.order_id)
        if payment is not None:
            payment.status, payment.refund_id, payment.refunded_at = "refunded", refund_id, utcnow()
        return StepOutcome.ok(refunded=True, refund_id=refund_id, amount_cents=amount_cents)

    return once(sessions, Inbox, msg.order_id, REFUND, record, call_gateway)
