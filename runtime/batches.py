"""Taking work off an in-process queue in batches: a thread that sends what piled up while it
was busy in one round trip (the outbox's publisher, the guard's releaser)."""
import queue
from typing import TypeVar

T = TypeVar("T")


def next_batch(waiting: "queue.Queue[T] | queue.SimpleQueue[T]", limit: int = 500) -> list[T]:
    """Waits for one item, then takes whatever else is waiting already, up to `limit`."""
    batch = [waiting.get()]
    while len(batch) < limit:
        try:
            batch.append(waiting.get_nowait())
        except queue.Empty:
            break
    return batch
