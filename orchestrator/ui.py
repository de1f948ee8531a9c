"""The operator's pages, served by the API: recent orders (GET /ui), one order's saga drawn as a
timeline that follows the order live (GET /ui/orders/{id}), the orders that need a person
(GET /ui/attention) and the dead letters (GET /ui/dead-letters). Server-rendered HTML (Jinja2,
autoescaped), hand-written CSS and one small script from orchestrator/static at /ui/static;
nothing is loaded from anywhere else. Not in the OpenAPI document: the JSON API is the contract,
these pages read the same tables through the same functions."""
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.staticfiles import StaticFiles

from orchestrator import dead_letter_reports, orders, steering, timeline_view, ui_reads, ui_words
from orchestrator.models import Order, SagaEvent
from orchestrator.outbox import Publisher
from runtime.db import Database

HERE = Path(__file__).parent
TEMPLATES, STATIC = HERE / "templates" / "ui", HERE / "static"
STATUSES = ("pending", "confirmed", "failed", "cancelled")
SERVICES = ("payment", "inventory", "notify", "saga")
PAGE = 50
# The pages load nothing from another origin (no CDN) and run no inline script; a form posts
# only here; no other site may frame them.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",  # an order's page is live data
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Said:
    """A banner after an action: what happened, and its colour."""

    text: str
    tone: str  # ok | warn


RETRY_SAID = {
    "accepted": Said("Re-driven: what the order waits for was sent again; the flag clears "
                     "when that succeeds.", "ok"),
    "refused": Said("Nothing to re-drive: the order does not need attention (any more).", "warn"),
}


def router(db: Database, publisher: Publisher) -> APIRouter:
    """The pages, on the API's database; `publisher` sends what a re-drive owes at once (the
    saga worker's relay would, after its grace)."""
    pages = APIRouter(include_in_schema=False)
    pages.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    env = _environment(_version(STATIC))

    def html(request: Request, template: str, code: int = 200, /,
             **context: Any) -> HTMLResponse:
        context.setdefault("nav", "")
        body = env.get_template(template).render(
            now=datetime.now(UTC), api=str(request.base_url).rstrip("/"), **context)
        return HTMLResponse(body, code, headers=HEADERS)

    def message(request: Request, status: int, title: str, text: str) -> HTMLResponse:
        return html(request, "message.html", status, title=title, text=text)

    @pages.get("/ui")
    def order_list(request: Request, status: str | None = None,
                   needs_attention: str | None = None, cursor: str | None = None,
                   limit: str | None = None) -> HTMLResponse:
        status = status if status in STATUSES else None
        flagged = {"true": True, "false": False}.get(needs_attention or "")
        size = int(limit) if limit and re.fullmatch(r"[0-9]{1,3}", limit) else PAGE
        size = min(max(size, 1), orders.PAGE_MAX)
        cursor = cursor or None
        if cursor is not None and not re.fullmatch(orders.CURSOR, cursor):
            return message(request, 400, "Not a cursor",
                           "That is not a page cursor these pages handed out.")
        with db.read_sessions() as session:
            try:
                found, next_cursor = orders.page(session, size, cursor, status, flagged)
            except orders.BadCursor:
                return message(request, 400, "Not a cursor",
                               "That is not a page cursor these pages handed out.")
            outcomes = ui_reads.recent_outcomes(session, datetime.now(UTC))
        # what the next page's link keeps
        kept = {"status": status or "",
                "needs_attention": "" if flagged is None else str(flagged).lower(),
                "limit": "" if size == PAGE else str(size)}
        filters = {key: value for key, value in kept.items() if value}
        return html(request, "orders.html", nav="orders", orders=found, outcomes=outcomes,
                    statuses=STATUSES, status=status, needs_attention=flagged,
                    cursor=cursor, first_url=_url("/ui", filters),
                    older_url=next_cursor and _url("/ui", {**filters, "cursor": next_cursor}))

    @pages.get("/ui/orders/{order_id}")
    def order_page(request: Request, order_id: str, fragment: str | None = None,
                   retry: str | None = None) -> HTMLResponse:
        with db.read_sessions() as session:
            found = orders.load(session, order_id) if orders.could_exist(order_id) else None
            causes = (ui_reads.attention_causes(session, [order_id])
                      if found is not None and found[0].needs_attention else {})
        if found is None:
            return message(request, 404, "No such order", f"There is no order {order_id}.")
        order, entries = found
        context: dict[str, Any] = {
            "order": order, "entries": entries, "why": why(order, entries),
            "cause": causes.get(order_id), "timeline": timeline_view.layout(entries)}
        if fragment == "timeline":
            # what the page's script swaps in on each event: drawn here only
            return html(request, "_order_live.html", **context)
        return html(request, "order.html", nav="orders", said=RETRY_SAID.get(retry or ""),
                    **context)

    @pages.post("/ui/orders/{order_id}/retry")
    def retry_order(request: Request, order_id: str) -> Response:
        """The form on an order that needs attention: what POST /orders/{id}/retry does."""
        if not same_origin(request.headers):
            return message(request, 403, "Refused",
                           "This form only works from these pages (another site sent it).")
        if not orders.could_exist(order_id):
            return message(request, 404, "No such order", f"There is no order {order_id}.")
        done = steering.retry(db.engine, order_id)
        if done.answer == "unknown":
            return message(request, 404, "No such order", f"There is no order {order_id}.")
        if done.owed:
            with db.read_sessions() as session:
                order = session.get(Order, order_id)
                assert order is not None  # orders are never deleted
                publisher.submit_rows(session, order, done.owed)
        # after a POST, a GET: a reload does not send the form again
        return RedirectResponse(f"/ui/orders/{order_id}?retry={done.answer}", 303)

    @pages.get("/ui/attention")
    def attention(request: Request, cursor: str | None = None) -> HTMLResponse:
        cursor = cursor or None
        if cursor is not None and not re.fullmatch(orders.CURSOR, cursor):
            return message(request, 400, "Not a cursor",
                           "That is not a page cursor these pages handed out.")
        with db.read_sessions() as session:
            found, next_cursor = orders.page(session, PAGE, cursor, needs_attention=True)
            causes = ui_reads.attention_causes(session, [o.id for o in found])
        return html(request, "attention.html", nav="attention", orders=found, causes=causes,
                    cursor=cursor,
                    older_url=next_cursor and _url("/ui/attention", {"cursor": next_cursor}))

    @pages.get("/ui/dead-letters")
    def dead_letters(request: Request, service: str | None = None,
                     cursor: str | None = None) -> HTMLResponse:
        service = service if service in SERVICES else None
        before = int(cursor) if cursor and re.fullmatch(r"[0-9]{1,18}", cursor) else None
        with db.read_sessions() as session:
            found, last = dead_letter_reports.page(session, PAGE, before, service)
        filters = {"service": service} if service else {}
        return html(request, "dead_letters.html", nav="dead-letters", letters=found,
                    services=SERVICES, service=service, cursor=before,
                    first_url=_url("/ui/dead-letters", filters),
                    older_url=None if last is None
                    else _url("/ui/dead-letters", {**filters, "cursor": str(last)}))

    return pages



def same_origin(headers: Mapping[str, str]) -> bool:
    """A form sent from these pages, not from another site: a browser says where a POST comes
    from (Sec-Fetch-Site, Origin). A client that says nothing (curl) is let through, as the
    JSON API lets it through."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    # the scheme is not compared: behind a TLS proxy the API sees http
    return origin is None or urlsplit(origin).netloc == headers.get("host")


def why(order: Order, entries: list[SagaEvent]) -> str:
    """The order's reason in words, with what the entry that set it reported."""
    if order.reason is None:
        return ""
    source = next((e for e in reversed(entries)
                   if e.reason == order.reason and e.status in ("failed", "requested")), None)
    return ui_words.why(order.reason, source.detail if source is not None else None)


# what the entries' table leaves out of `detail`: it has columns of its own
SHOWN_ELSEWHERE = frozenset({"worker", "started_at"})


DETAIL_SHOWN = 160  # characters of a value in the table; all of it in its tooltip


def detail_items(detail: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(key, value as shown, whole value) of what a step reported, as JSON but for text."""
    items = []
    for key, value in detail.items():
        if key in SHOWN_ELSEWHERE:
            continue
        whole = value if isinstance(value, str) else json.dumps(value, default=str)
        shown = whole if len(whole) <= DETAIL_SHOWN else whole[:DETAIL_SHOWN - 1] + "…"
        items.append((key, shown, whole))
    return items


def _url(path: str, query: Mapping[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path


def _version(directory: Path) -> str:
    """A digest of the static files: their URLs change when they do, so no browser keeps an
    old script or stylesheet."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def _environment(version: str) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(iso=ui_words.iso, age=ui_words.age, money=ui_words.money,
                       duration=ui_words.duration, reason_words=ui_words.reason_words,
                       started_at=timeline_view.started_at, detail_items=detail_items)
    env.globals.update(static=lambda name: f"/ui/static/{name}?v={version}")
    return env
