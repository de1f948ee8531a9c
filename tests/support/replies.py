"""Talking to workers as the saga does: sending them messages, reading their replies."""
import json
from typing import Any

from runtime.broker import Broker
from runtime.celery_app import SagaApp, make_app
from runtime.deadletters import LoggedOnly
from runtime.reply_stream import STREAM


def saga_replies(client: Any,
                 into: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Take the steps' replies waiting on the replies' stream into `into`, by order id, as the
    saga worker would (runtime/reply_stream.py)."""
    for entry_id, fields in client.xrange(STREAM):
        reply = json.loads(fields[b"reply"] if b"reply" in fields else fields["reply"])
        into.setdefault(reply["order_id"], []).append(reply)
        client.xdel(STREAM, entry_id)
    return into


def sender(broker: str | Broker) -> SagaApp:
    """A Celery app that only publishes, routed and configured like ours."""
    return make_app("test-sender", broker, LoggedOnly())
