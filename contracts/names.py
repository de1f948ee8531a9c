"""Task and queue names. Tasks are sent by name; a task's queue is its namespace."""


class Queue:
    PAYMENT = "payment"
    INVENTORY = "inventory"
    NOTIFY = "notify"
    SAGA = "saga"

    ALL = (PAYMENT, INVENTORY, NOTIFY, SAGA)


class Task:
    AUTHORIZE_PAYMENT = "payment.authorize"
    REFUND_PAYMENT = "payment.refund"
    RESERVE_STOCK = "inventory.reserve"
    RELEASE_STOCK = "inventory.release"
    SEND_CONFIRMATION = "notify.order_confirmed"
    SEND_FAILURE_NOTICE = "notify.order_failed"
    SEND_CANCELLATION_NOTICE = "notify.order_cancelled"
    # the orchestrator's saga worker
    STEP_RESULT = "saga.step_result"
    STEP_FAILED = "saga.step_failed"
    DEAD_LETTER = "saga.dead_letter"  # every process reports its dead letters to the saga


def queue_of(task_name: str) -> str:
    """`payment.authorize` runs on queue `payment`: one rule, so every app routes alike."""
    queue = task_name.split(".", 1)[0]
    if queue not in Queue.ALL:
        raise ValueError(f"task {task_name!r} has no queue")
    return queue
