"""Payment's domain: authorize an order's total, refund it to compensate. Plain functions that
take their dependencies; the Celery tasks only turn wire data into these calls."""
from sqlalchemy.orm import Session, sessionmaker

from contracts.messages import AuthorizePayment, PaymentAuthorized, RefundPayment
from contracts.names import Task
from contracts.runtime.inbox import once
from contracts.runtime.step import StepOutcome
from contracts.runtime.store import utcnow
from services.payment.gateway import Authorization, Gateway
from services.payment.models import Inbox, Payment


def authorize(msg: AuthorizePayment, sessions: sessionmaker, gateway: Gateway  # type: ignore[type-arg]
              ) -> StepOutcome:
    order, step = msg.order, Task.AUTHORIZE_PAYMENT

    def call_gateway() -> Authorization:
        return gateway.authorize(token=msg.payment_token, amount_cents=order.total_cents,
                                 currency=order.currency, idempotency_key=f"{order.order_id}:{step}")

    def record(session: Session, auth: Authorization) -> StepOutcome:
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

    return once(sessions, Inbox, order.order_id, step, record, call_gateway)


def refund(msg: RefundPayment, sessions: sessionmaker, gateway: Gateway  # type: ignore[type-arg]
           ) -> StepOutcome:
    step = Task.REFUND_PAYMENT
    with sessions.begin() as session:
        payment = session.get(Payment, msg.order_id)
        held = None if payment is None else (payment.authorization_id, payment.amount_cents)

    def call_gateway() -> str | None:
        if held is None:
            return None
        return gateway.refund(authorization_id=held[0], amount_cents=held[1],
                              idempotency_key=f"{msg.order_id}:{step}")

    def record(session: Session, refund_id: str | None) -> StepOutcome:
        if refund_id is None:
            return StepOutcome.ok(refunded=False, why="nothing was authorized")
        payment = session.get(Payment, msg.order_id)
        assert payment is not None
        payment.status, payment.refund_id, payment.refunded_at = "refunded", refund_id, utcnow()
        return StepOutcome.ok(refunded=True, refund_id=refund_id, amount_cents=payment.amount_cents)

    return once(sessions, Inbox, msg.order_id, step, record, call_gateway)
