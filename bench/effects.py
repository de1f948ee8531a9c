"""What an order does in the world, written once for the bench's plain contenders (the hand-rolled
Celery chain, bench/handrolled.py, and the DBOS workflow, bench/dbos_peer.py): nothing of the
saga's runtime (no inbox, no guard, no outbox), only the effects themselves, each as the saga's
services have it.

- payment: the sandbox gateway's answer for the token (its ledger row, as SandboxGateway
  writes one per idempotency key), then the order's `payments` row, authorized;
- inventory: the same conditional stock UPDATE as services/inventory/handlers.py;
- notify: the same confirmation e-mail (services/notify/templates) over SMTP, on a connection
  kept per thread like SmtpMailer's, then the order marked confirmed in the order database.

The databases are SQLite files (WAL, synchronous NORMAL: the pragmas the saga's own get) or
PostgreSQL, one per service and one for the orders, like the saga's.
"""
import email.policy
import json
import os
import smtplib
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from functools import cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from devstack.stack import REPO_ROOT

# like the orchestrator's seed catalog (orchestrator/catalog.py), in memory
CATALOG = {"BOOK-1": 1299, "MUG-1": 899, "LIMITED-1": 4999, "SOLDOUT-1": 999}
CURRENCY = "EUR"
SENDER = "Order Saga <orders@saga.localhost>"
APPROVES = {"tok_visa", "tok_gatewayFlaky"}  # the sandbox's approving tokens

SCHEMA = {
    "orders": ["CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY, "
               "status VARCHAR(16) NOT NULL, customer_email VARCHAR(320) NOT NULL, "
               "items TEXT NOT NULL, total_cents INTEGER NOT NULL, currency VARCHAR(3) NOT NULL, "
               "payment_token VARCHAR(64) NOT NULL, created_at VARCHAR(40) NOT NULL)"],
    "payment": ["CREATE TABLE IF NOT EXISTS gateway_calls (idempotency_key VARCHAR(160) "
                "PRIMARY KEY, kind VARCHAR(16) NOT NULL, token VARCHAR(64), "
                "amount_cents INTEGER NOT NULL, result VARCHAR(16) NOT NULL, "
                "reference VARCHAR(64), created_at VARCHAR(40) NOT NULL)",
                "CREATE TABLE IF NOT EXISTS payments (order_id VARCHAR(64) PRIMARY KEY, "
                "authorization_id VARCHAR(64) UNIQUE, amount_cents INTEGER NOT NULL, "
                "currency VARCHAR(3) NOT NULL, status VARCHAR(16) NOT NULL, "
                "refund_id VARCHAR(64), created_at VARCHAR(40) NOT NULL)"],
    "inventory": ["CREATE TABLE IF NOT EXISTS stock (sku VARCHAR(64) PRIMARY KEY, "
                  "available INTEGER NOT NULL CHECK (available >= 0))"],
}

_ADD_ORDER = text("INSERT INTO orders (id, status, customer_email, items, total_cents, currency, "
                  "payment_token, created_at) VALUES (:id, 'pending', :customer_email, :items, "
                  ":total_cents, :currency, :payment_token, :created_at)")
_GET_ORDER = text("SELECT id, status, created_at FROM orders WHERE id = :id")
_SET_STATUS = text("UPDATE orders SET status = :status WHERE id = :id")
_GATEWAY = text("INSERT INTO gateway_calls (idempotency_key, kind, token, amount_cents, result, "
                "reference, created_at) VALUES (:key, :kind, :token, :amount_cents, :result, "
                ":reference, :created_at)")
_AUTHORIZED = text("INSERT INTO payments (order_id, authorization_id, amount_cents, currency, "
                   "status, refund_id, created_at) VALUES (:order_id, :authorization_id, "
                   ":amount_cents, :currency, 'authorized', NULL, :created_at)")
_REFUNDED = text("UPDATE payments SET status = 'refunded', refund_id = :refund_id "
                 "WHERE order_id = :order_id")
# the saga's inventory statement (services/inventory/handlers.py, _TAKE), as SQL
_TAKE = text("UPDATE stock SET available = available - :q WHERE sku = :sku AND available >= :q")


class Declined(Exception):
    """The gateway declined the card."""


class OutOfStock(Exception):
    """A line of the order is short; nothing was taken."""


def now() -> str:
    return datetime.now(UTC).isoformat()


def engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=10, max_overflow=10)
    made = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})

    @event.listens_for(made, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # what runtime/db.py gives the saga's SQLite: a commit costs no fsync, readers never
        # block the writer; a setting either side could have, so both have it
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return made


def create_schema(urls: dict[str, str], stock: dict[str, int]) -> None:
    """Every table, in the database of its part; the stock filled as given."""
    for part, statements in SCHEMA.items():
        made = create_engine(urls[part], poolclass=NullPool)
        try:
            with made.begin() as conn:
                for statement in statements:
                    conn.exec_driver_sql(statement)
                if part == "inventory":
                    conn.exec_driver_sql("DELETE FROM stock")
                    for sku, available in stock.items():
                        conn.execute(text("INSERT INTO stock (sku, available) "
                                          "VALUES (:sku, :n)"), {"sku": sku, "n": available})
        finally:
            made.dispose()


# -- the order: priced and stored by the API -----------------------------------------------------

def price(items: list[dict[str, Any]]) -> int | None:
    """The total in cents from the catalog; None if a SKU is not in it."""
    if any(line["sku"] not in CATALOG for line in items):
        return None
    return sum(CATALOG[line["sku"]] * int(line["quantity"]) for line in items)


def store_order(db: Engine, order: dict[str, Any]) -> None:
    with db.begin() as conn:
        conn.execute(_ADD_ORDER, {**order, "items": json.dumps(order["items"])})


def read_order(db: Engine, order_id: str) -> dict[str, Any] | None:
    with db.connect() as conn:
        row = conn.execute(_GET_ORDER, {"id": order_id}).first()
    return None if row is None else {"id": row.id, "status": row.status,
                                     "created_at": row.created_at}


def set_status(db: Engine, order_id: str, status: str) -> None:
    with db.begin() as conn:
        conn.execute(_SET_STATUS, {"id": order_id, "status": status})


# -- payment -------------------------------------------------------------------------------------

def authorize(db: Engine, order: dict[str, Any]) -> str:
    """The gateway's answer (its ledger row, committed on its own like a remote call), then the
    payment row; returns the authorization id."""
    if order["payment_token"] not in APPROVES:
        raise Declined(order["payment_token"])
    reference = f"auth_{uuid.uuid4().hex[:20]}"
    with db.begin() as conn:
        conn.execute(_GATEWAY, {"key": f"{order['id']}:payment.authorize", "kind": "authorize",
                                "token": order["payment_token"],
                                "amount_cents": order["total_cents"], "result": "approved",
                                "reference": reference, "created_at": now()})
    with db.begin() as conn:
        conn.execute(_AUTHORIZED, {"order_id": order["id"], "authorization_id": reference,
                                   "amount_cents": order["total_cents"],
                                   "currency": order["currency"], "created_at": now()})
    return reference


def refund(db: Engine, order: dict[str, Any]) -> str:
    """The compensation of authorize(): the gateway's refund, then the payment row says so."""
    reference = f"re_{uuid.uuid4().hex[:20]}"
    with db.begin() as conn:
        conn.execute(_GATEWAY, {"key": f"{order['id']}:payment.refund", "kind": "refund",
                                "token": None, "amount_cents": order["total_cents"],
                                "result": "refunded", "reference": reference,
                                "created_at": now()})
    with db.begin() as conn:
        conn.execute(_REFUNDED, {"order_id": order["id"], "refund_id": reference})
    return reference


# -- inventory -----------------------------------------------------------------------------------

def reserve(db: Engine, order: dict[str, Any]) -> None:
    """Every line or none, in one transaction."""
    with db.begin() as conn:
        for line in sorted(order["items"], key=lambda line: str(line["sku"])):
            taken = conn.execute(_TAKE, {"sku": line["sku"], "q": line["quantity"]}).rowcount
            if taken != 1:
                raise OutOfStock(line["sku"])  # leaving the block rolls the others back


# -- notify --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class _TemplateOrder:
    """What the saga's template reads (attributes: a dict's `items` would be its method)."""

    order_id: str
    items: list[_Line]
    total_cents: int
    currency: str


@cache
def _template() -> Any:
    templates = Environment(loader=FileSystemLoader(REPO_ROOT / "services/notify/templates"),
                            undefined=StrictUndefined, keep_trailing_newline=True)
    return templates.get_template("confirmation.txt")


@cache
def _header(name: str, value: str) -> Any:
    # parsed once, as services/notify/mailer.py does: parsing costs more than the rest of a mail
    return email.policy.default.header_factory(name, value)


def compose(order: dict[str, Any]) -> EmailMessage:
    """The saga's confirmation: the same headers, the same template, a 7bit text body."""
    mail = EmailMessage()
    mail["From"] = _header("From", SENDER)
    mail["To"] = order["customer_email"]
    mail["Subject"] = f"Your order {order['id']} is confirmed"
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<{order['id']}.confirmation@saga.localhost>"
    body = _template().render(order=_TemplateOrder(
        order["id"], [_Line(str(x["sku"]), int(x["quantity"])) for x in order["items"]],
        int(order["total_cents"]), str(order["currency"])))
    for name, value in (("Content-Type", 'text/plain; charset="utf-8"'),
                        ("Content-Transfer-Encoding", "7bit"), ("MIME-Version", "1.0")):
        mail[name] = _header(name, value)
    mail.set_payload(body)
    return mail


class Mailer:
    """One SMTP connection per thread, kept between mails; a connection the server closed
    meanwhile is replaced once, and the mail sent on the new one."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._local = threading.local()

    def send(self, mail: EmailMessage) -> None:
        kept: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if kept is not None:
            try:
                kept.send_message(mail)
                return
            except (smtplib.SMTPServerDisconnected, OSError):
                kept.close()
        smtp = smtplib.SMTP(self.host, self.port, timeout=10)
        self._local.smtp = smtp
        smtp.send_message(mail)


def confirm(orders_db: Engine, mailer: Mailer, order: dict[str, Any]) -> None:
    """The confirmation e-mail, then the order confirmed: its last effect."""
    mailer.send(compose(order))
    set_status(orders_db, order["id"], "confirmed")


@cache
def engine_from_env(variable: str) -> Engine:
    """The engine of the database a variable names, made on first use: so in the process (or
    the prefork child) that uses it."""
    return engine(os.environ[variable])


@cache
def mailer_from_env() -> "Mailer":
    return Mailer(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"]))
