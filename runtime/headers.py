"""What our messages say about themselves in their headers."""
from typing import Any


def brief(order_id: str | None) -> dict[str, Any]:
    """Options for send_task/signature/retry that name the order instead of the payload: Celery
    otherwise renders the whole payload with saferepr into every message's headers (argsrepr),
    which costs more than sending it; logs and monitors still see which order it is."""
    return {"argsrepr": f"(<order {order_id}>,)", "kwargsrepr": "{}"}
