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


# every kind of fault, and what it does (chaos/faults.py does it)
KINDS = {
    "kill_main": "kill -9 a worker's main process (its supervisor restarts it)",
    "kill_child": "kill -9 a prefork pool child mid-task",
    "duplicate": "push copies of queued and in-flight messages (redelivery)",
    "junk": "push undecodable and non-message junk onto a queue",
    "redis_restart": "restart the broker, its append-only file kept",
    "redis_wipe": "restart the broker with nothing kept: every queued and unacked message lost",
    "redis_pause": "freeze the broker (SIGSTOP) for a while: connections hang, nothing refused",
    "rabbitmq_restart": "restart the RabbitMQ node, its quorum queues kept on disk "
                        "(--broker rabbitmq)",
    "failover": "kill -9 the Redis master; the sentinels promote its replica; the old master "
                "comes back a while later as a replica (--broker sentinel)",
    "smtp_outage": "the SMTP server refuses connections for a while",
    "pg_restart": "PostgreSQL fast restart: every session cut (--database postgres)",
    "pg_stop": "PostgreSQL stopped for a few seconds, then started (--database postgres)",
    "partition": "a worker's host cut off from the broker's (packets dropped both ways or one "
                 "way) for a while (needs hosts)",
    "lossy": "the links of the workers' hosts drop 10%% of packets for a while (needs hosts)",
    "latency": "the links of the workers' hosts delay every packet 100 ms (needs hosts, netem)",
}
POSTGRES_ONLY = {"pg_restart", "pg_stop"}
HOSTS_ONLY = {"partition", "lossy", "latency"}
# what each broker can have done to it (the rest apply to every broker)
BROKER_FAULTS = {
    "redis": {"redis_restart", "redis_wipe", "redis_pause", "duplicate", "junk"},
    "sentinel": {"failover", "duplicate", "junk"},
    "rabbitmq": {"rabbitmq_restart", "duplicate", "junk"},
}
SERVICES = ("payment", "inventory", "notify")


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str  # one of KINDS

    target: str = ""
    duration_s: float = 0.0
    how: str = ""  # a partition's direction, seen from the target: both, in, out

    def __str__(self) -> str:
        what = f"{self.kind} {self.target} {self.how}".strip()
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


def faults(rng: random.Random, window_s: float, kinds: set[str]) -> list[Fault]:
    """Each chosen kind of fault at least once, at random times inside the window."""
    def at() -> float:
        return round(rng.uniform(0.1 * window_s, 0.9 * window_s), 1)

    def lasting(low: float, high: float) -> float:
        return round(rng.uniform(low, high), 1)

    plan: list[Fault] = []
    for kind in sorted(kinds):  # sorted: the same seed gives the same schedule
        if kind == "kill_main":
            plan += [Fault(at(), kind, worker) for worker in WORKER_KINDS]
        elif kind == "kill_child":
            plan += [Fault(at(), kind, worker) for worker in PREFORK_KINDS]
        elif kind in ("duplicate", "junk"):
            plan += [Fault(at(), kind, queue) for queue in QUEUES]
        elif kind == "smtp_outage":
            plan.append(Fault(at(), kind, duration_s=lasting(3, 8)))
        elif kind == "failover":
            plan.append(Fault(at(), kind, duration_s=lasting(5, 10)))
        elif kind == "redis_pause":
            plan.append(Fault(at(), kind, duration_s=lasting(3, 12)))
        elif kind == "pg_stop":
            plan.append(Fault(at(), kind, duration_s=lasting(2, 8)))
        elif kind == "partition":
            plan += [Fault(at(), kind, service, lasting(3, 10), rng.choice(("both", "in", "out")))
                     for service in SERVICES]
        elif kind in ("lossy", "latency"):
            plan.append(Fault(at(), kind, duration_s=lasting(4, 10)))
        else:
            plan.append(Fault(at(), kind))
    return sorted(plan, key=lambda f: f.at_s)
