"""The promises, checked from outside: through the API, the SMTP server's mailbox and each
service's own database. Nothing here trusts what the saga says about itself alone."""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from chaos import plan
from devstack.smtp import read_mails

INITIAL_STOCK = {"BOOK-1": 1000, "MUG-1": 1000, "LIMITED-1": 10, "SOLDOUT-1": 0}


@dataclass
class Report:
    rows: list[tuple[str, Any, str]] = field(default_factory=list)  # (what, value, expected)
    broken: list[str] = field(default_factory=list)

    def check(self, what: str, value: Any, ok: bool, expected: str) -> None:
        self.rows.append((what, value, expected))
        if not ok:
            self.broken.append(f"{what}: {value} (expected {expected})")

    def info(self, what: str, value: Any) -> None:
        self.rows.append((what, value, ""))

    def table(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'invariant':<{width}}  {'value':>8}  expected", "-" * (width + 22)]
        lines += [f"{w:<{width}}  {v!s:>8}  {e}" for w, v, e in self.rows]
        return "\n".join(lines)


def query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def dictated(order: plan.Order) -> set[str]:
    """How an order may end (`confirmed`, or a failure reason) by its card and its stock alone:
    a fault may delay it, never change it."""
    if order.token.startswith("tok_chargeDeclined"):
        return {"payment_declined"}
    if order.token == "tok_gatewayDown":
        return {"payment_unavailable"}
    ends = {"payment_unavailable"} if order.token == "tok_gatewayFlaky" else set()
    if order.sku == "SOLDOUT-1":
        return ends | {"out_of_stock"}
    if order.sku == "LIMITED-1":  # ten on the shelf: whoever comes first
        return ends | {"confirmed", "out_of_stock"}
    return ends | {"confirmed"}


def check(orders: dict[str, dict[str, Any]], env: dict[str, str], maildir: Path,
          junk_sent: tuple[int, int], restarts: int, placed: dict[str, plan.Order]) -> Report:
    """`junk_sent`: (pushed, of which still queued when a redis_wipe came). Those may have been
    taken by a worker just before the wipe, or lost with it: either is right."""
    report = Report()
    status = Counter(o["status"] for o in orders.values())
    report.info("orders", len(orders))
    report.info("confirmed", status["confirmed"])
    report.info("failed", status["failed"])
    report.check("stuck (not confirmed or failed)", status["pending"], status["pending"] == 0, "0")
    astray = Counter(f"{placed[o].token}/{placed[o].sku}->{d['reason'] or d['status']}"
                     for o, d in orders.items() if d["status"] != "pending"
                     and (d["reason"] or d["status"]) not in dictated(placed[o]))
    report.check("orders not ending as card and stock dictate", sum(astray.values()),
                 not astray, "0" + (f" (saw {dict(astray)})" if astray else ""))
    attention = sum(o["needs_attention"] for o in orders.values())
    report.check("orders flagged for attention", attention, attention == 0, "0")

    ledger = query(env["PAYMENT_DATABASE_URL"],
                   "select idempotency_key, kind, result from sandbox_gateway_calls")
    charged = Counter(k.split(":", 1)[0] for k, kind, r in ledger
                      if kind == "authorize" and r == "approved")
    refunded = Counter(k.split(":", 1)[0] for k, kind, r in ledger if kind == "refund")
    doubles = sum(1 for n in charged.values() if n > 1) + sum(1 for n in refunded.values() if n > 1)
    report.check("double charges or refunds", doubles, doubles == 0, "0")
    stray_refunds = sum(1 for o in refunded if orders.get(o, {}).get("status") != "failed")
    report.check("refunds that don't match a failed order", stray_refunds, stray_refunds == 0, "0")
    kept = sum(1 for o, d in orders.items()
               if d["status"] == "failed" and charged[o] and not refunded[o])
    report.check("failed orders still charged", kept, kept == 0, "0")
    unpaid = sum(1 for o, d in orders.items() if d["status"] == "confirmed" and not charged[o])
    report.check("confirmed orders never charged", unpaid, unpaid == 0, "0")

    report.check("oversold units", *_stock(orders, env))

    mails: Counter[str] = Counter()
    for mail in read_mails(maildir):
        mails.update(o for o in orders if o in str(mail["Subject"]))
    wrong = sum(1 for o in orders if mails[o] != 1)
    report.check("orders whose e-mail count is not 1", wrong, wrong == 0, "0")

    letters = []
    for name in ("ORCHESTRATOR", "PAYMENT", "INVENTORY", "NOTIFY"):
        letters += [row[0] for row in query(env[f"{name}_DATABASE_URL"],
                                            "select task from dead_letters")]
    # junk: kept by the Redis transport, or dead-lettered by RabbitMQ and kept from there
    junk = sum(1 for t in letters if t.startswith("<junk on queue") or t == "<not a task message>")
    pushed, maybe_wiped = junk_sent
    expected = (f"{pushed}" if not maybe_wiped
                else f"{pushed - maybe_wiped}-{pushed} ({maybe_wiped} queued at a wipe)")
    report.check("dead letters: junk", junk, pushed - maybe_wiped <= junk <= pushed, expected)
    others = len(letters) - junk
    report.check("dead letters: anything else", others, others == 0, "0")
    report.info("worker restarts", restarts)
    [(redrives,)] = query(env["ORCHESTRATOR_DATABASE_URL"],
                          "select coalesce(sum(redrives), 0) from orders")
    report.info("sagas driven again by the sweeper", redrives)
    return report


def _stock(orders: dict[str, dict[str, Any]], env: dict[str, str]) -> tuple[int, bool, str]:
    """Units sold beyond the shelf, and stock that leaked (neither on the shelf nor sold)."""
    available = dict(query(env["INVENTORY_DATABASE_URL"], "select sku, available from stock"))
    sold: Counter[str] = Counter()
    for order in orders.values():
        if order["status"] == "confirmed":
            for line in order["items"]:
                sold[line["sku"]] += line["quantity"]
    oversold = sum(max(0, sold[s] - n) for s, n in INITIAL_STOCK.items())
    leaked = sum(abs(n - sold[s] - available[s]) for s, n in INITIAL_STOCK.items())
    return oversold + leaked, oversold == 0 and leaked == 0, "0 (and no stock leaked)"
