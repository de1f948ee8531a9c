"""Turning the saga's decisions into Celery signatures: the forward chain across the three
queues, and the single messages (a compensation, the failure notice) the saga sends later."""
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import Celery
from celery.canvas import Signature

from contracts.messages import (
    AuthorizePayment,
    OrderLine,
    RefundPayment,
    ReleaseStock,
    SagaOrder,
    SendCancellationNotice,
    SendFailureNotice,
    StepFailed,
)
from contracts.names import Queue, Task, queue_of
from orchestrator import saga
from orchestrator.models import Order
from runtime.headers import brief

Publish = Callable[..., object]  # sends the message when called with the publish options


def saga_order(order: Order) -> SagaOrder:
    return SagaOrder(order_id=order.id, customer_email=order.customer_email,
                     items=[OrderLine(**line) for line in order.items],
                     total_cents=order.total_cents, currency=order.currency)


def errback(app: Celery, order_id: str, step: str) -> Signature:
    # Immutable and routed to our own queue: it must run in the saga worker, never inline in
    # the worker of the step that failed (see docs/celery-notes.md, "When a step fails").
    return app.signature(Task.STEP_FAILED, args=(StepFailed(order_id=order_id, step=step)
                                                 .model_dump(mode="json"),),
                         immutable=True, queue=Queue.SAGA, **brief(order_id))


def signature(app: Celery, order_id: str, task: str, args: tuple[Any, ...] = ()) -> Signature:
    sig = app.signature(task, args=args, queue=queue_of(task), task_id=f"{order_id}:{task}",
                        **brief(order_id))
    sig.on_error(errback(app, order_id, task))
    return sig


def forward_chain(app: Celery, order: Order) -> Publish:
    """ONE chain across the three queues; each step gets the previous step's output. Its message
    is the one Celery's canvas would send (the first step's, carrying the later steps' signatures
    as its `chain`, the next one last), built here directly: the canvas' clones and freezes cost
    as much CPU as the publish itself (make bench)."""
    first = AuthorizePayment(order=saga_order(order), payment_token=order.payment_token,
                             report_at_once=list(saga.REPORT_AT_ONCE))
    head, *rest = saga.STEPS
    task_id = f"{order.id}:{head.action}"
    return partial(app.send_task, head.action, args=(first.model_dump(mode="json"),),
                   task_id=task_id, root_id=task_id, queue=queue_of(head.action),
                   chain=[signature(app, order.id, step.action) for step in reversed(rest)],
                   link_error=errback(app, order.id, head.action), **brief(order.id))


def message(order: Order, task: str) -> dict[str, Any]:
    """The message of a task the saga sends on its own (not part of the forward chain)."""
    if task == Task.REFUND_PAYMENT:
        return RefundPayment(order_id=order.id).model_dump(mode="json")
    if task == Task.RELEASE_STOCK:
        return ReleaseStock(order_id=order.id).model_dump(mode="json")
    if task == Task.SEND_FAILURE_NOTICE:
        return SendFailureNotice(order=saga_order(order), reason=order.reason or "failed",
                                 refunded=Task.REFUND_PAYMENT in order.compensated
                                 ).model_dump(mode="json")
    if task == Task.SEND_CANCELLATION_NOTICE:
        return SendCancellationNotice(order=saga_order(order),
                                      refunded=Task.REFUND_PAYMENT in order.compensated
                                      ).model_dump(mode="json")
    raise ValueError(f"the saga has no message for {task}")


def for_task(app: Celery, order: Order, task: str) -> Publish:
    """What to publish for an outbox row, the forward chain or one message: call it with the
    publish options."""
    if task == saga.STEPS[0].action:
        return forward_chain(app, order)
    return signature(app, order.id, task, (message(order, task),)).apply_async
