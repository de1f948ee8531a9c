"""Talking to workers as the saga does: sending them messages, reading their replies."""
import base64
import json
from typing import Any

from contracts.names import Task
from runtime.celery_app import SagaApp, make_app
from runtime.deadletters import LoggedOnly


def saga_replies(client: Any,
                 into: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Pop the replies waiting on queue `saga` (Celery's envelope: a base64 JSON body) into
    `into`, by order id; the dead letters' reports, which go there too, are left out."""
    while (raw := client.rpop("saga")) is not None:
        envelope = json.loads(raw)
        if envelope["headers"]["task"] != Task.STEP_RESULT:
            continue
        reply = json.loads(base64.b64decode(envelope["body"]))[0][0]
        into.setdefault(reply["order_id"], []).append(reply)
    return into


def sender(broker_url: str) -> SagaApp:
    """A Celery app that only publishes, routed and configured like ours."""
    return make_app("test-sender", broker_url, LoggedOnly())
