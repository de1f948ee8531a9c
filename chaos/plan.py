"""What a chaos run does, decided up front from a seed so a failing schedule can be replayed."""
import random
from dataclasses import dataclass

WORKER_KINDS = ("payment", "inventory", "notify", "saga")
PREFORK_KINDS = ("payment", "inventory")  # so there are pool children to kill
QUEUES = ("payment", "inventory", "notify", "saga")

# (what, weight): how often each payment token and each product comes up
TOKENS: tuple[tuple[str, int], ...] = (
    ("tok_visa", 60), ("tok_chargeDeclined", 8), ("tok_chargeDeclinedInsufficientFunds", 7),
    ("tok_gatewayFlaky", 15), ("tok_gatewayDown", 10))
SKUS: tuple[tuple[str, int], ...] = (
    ("BOOK-1", 55), ("MUG-1", 20), ("LIMITED-1", 20), ("SOLDOUT-1", 5))


@dataclass(frozen=True)
class Fault:
    at_s: float
    # kill_main | kill_child | redis_restart | redis_wipe | duplicate | junk | smtp_outage
    kind: str
    target: str = ""
    duration_s: float = 0.0

    def __str__(self) -> str:
        what = f"{self.kind} {self.target}".strip()
        lasting = f" for {self.duration_s:.0f}s" if self.duration_s else ""
        return f"t+{self.at_s:5.1f}s  {what}" + lasting


@dataclass(frozen=True)
class Order:
    sku: str
    quantity: int
    token: str


def orders(rng: random.Random, count: int) -> list[Order]:
    tokens, token_weights = [t for t, _ in TOKENS], [w for _, w in TOKENS]
    skus, sku_weights = [s for s, _ in SKUS], [w for _, w in SKUS]
    return [Order(sku=rng.choices(skus, sku_weights)[0], quantity=rng.choice((1, 1, 1, 2)),
                  token=rng.choices(tokens, token_weights)[0]) for _ in range(count)]


def faults(rng: random.Random, window_s: float) -> list[Fault]:
    """Every kind of fault at least once, at random times inside the window."""
    def at() -> float:
        return round(rng.uniform(0.1 * window_s, 0.9 * window_s), 1)

    plan = [Fault(at(), "kill_main", kind) for kind in WORKER_KINDS]
    plan += [Fault(at(), "kill_child", kind) for kind in PREFORK_KINDS]
    plan += [Fault(at(), "duplicate", queue) for queue in QUEUES]
    plan += [Fault(at(), "junk", queue) for queue in QUEUES]
    plan += [Fault(at(), "redis_restart"), Fault(at(), "redis_wipe")]
    plan.append(Fault(at(), "smtp_outage", duration_s=round(rng.uniform(3, 8), 1)))
    return sorted(plan, key=lambda f: f.at_s)
