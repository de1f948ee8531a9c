"""RabbitMQ's side of the broker, on the local RabbitMQ in a vhost of the test's own: the queues
are quorum queues with a delivery limit and a dead-letter exchange, and what RabbitMQ
dead-letters reaches the worker's dead letters with the reason it gave."""
import threading
import time

import pytest
from kombu import Connection

from contracts.names import Queue, Task
from devstack import rabbitmq as server
from runtime.celery_app import make_app
from runtime.deadletters import LoggedOnly
from runtime.rabbitmq import DELIVERY_LIMIT, drain, task_queue


class Kept:
    """The dead letters of a worker, as a list (a fake of our own store)."""

    def __init__(self) -> None:
        self.letters: list[tuple[str, str | None, object, str]] = []

    def store(self, task, order_id, payload, error):
        self.letters.append((task, order_id, payload, error))

    def record(self, task, order_id, payload, error):
        self.store(task, order_id, payload, error)


@pytest.fixture
def vhost():
    why = server.unavailable()
    if why:
        pytest.skip(f"RabbitMQ: {why}")
    with server.Vhost() as made:
        yield made.url


def test_every_queue_is_a_quorum_queue_with_a_delivery_limit_and_a_dead_letter_exchange(vhost):
    app = make_app("test", vhost, LoggedOnly())
    app.send_task(Task.AUTHORIZE_PAYMENT, args=({"order_id": "q-1"},))  # declares its queue
    with Connection(vhost) as connection:
        declared = task_queue(Queue.PAYMENT)(connection.default_channel)
        # a passive declare with other arguments would be refused (406): these are the ones
        assert declared.queue_declare(passive=True).message_count == 1
        assert declared.queue_arguments["x-queue-type"] == "quorum"
        assert declared.queue_arguments["x-delivery-limit"] == DELIVERY_LIMIT


def test_poison_and_rejected_messages_reach_the_workers_dead_letters_with_rabbitmqs_reason(vhost):
    app = make_app("test", vhost, LoggedOnly())
    app.send_task(Task.AUTHORIZE_PAYMENT, args=({"order": {"order_id": "poison-1"}},))
    app.send_task(Task.AUTHORIZE_PAYMENT, args=({"order": {"order_id": "rejected-1"}},))
    with Connection(vhost) as connection:
        queue = task_queue(Queue.PAYMENT)(connection.default_channel)
        for _ in range(60):  # each taken and handed back, as a worker that dies on it would
            message = queue.get(no_ack=False)
            if message is None:
                break
            if "rejected-1" in str(message.body):
                message.reject()  # Reject(requeue=False): straight to the dead-letter exchange
            else:
                message.requeue()
        assert queue.get(no_ack=False) is None  # neither comes back any more
    kept, stopping = Kept(), threading.Event()
    thread = threading.Thread(target=drain, args=(app, Queue.PAYMENT, kept, stopping))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(kept.letters) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stopping.set()
        thread.join(10)
    by_order = {order_id: (task, payload, error) for task, order_id, payload, error
                in kept.letters}
    task, payload, error = by_order["poison-1"]
    assert task == Task.AUTHORIZE_PAYMENT and payload == {"order": {"order_id": "poison-1"}}
    assert error.startswith("poison: delivered") and "x-delivery-limit" in error
    assert by_order["rejected-1"][2].startswith("rejected by the payment worker")
    with Connection(vhost) as connection:  # kept, then acked: the dead queue is empty
        assert connection.default_channel.queue_declare(
            "payment.dead", passive=True).message_count == 0
