"""The operator's pages in a real headless Chromium (Debian's `chromium`, driven by Playwright),
against the whole system running for real: what a person sees at /ui, on an order's page while
its saga runs, without JavaScript, and on the attention and dead-letter pages."""
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from tests.support.orders import order_body, step_names, wait_terminal
from tests.support.replies import sender as make_sender
from tests.support.waiting import wait_for

# skipped, saying why, where Playwright is not installed; imported once it is known to be
pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed (pip install -r requirements-dev.txt)")
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no `chromium` on PATH: `make test-deps` installs Debian's package when run as "
                "root with apt", allow_module_level=True)
LIVE_S = 30_000  # ms: how long a page may take to show what the saga did


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # Playwright's bundled driver, the system's browser: nothing is downloaded
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@contextmanager
def opened(browser: Browser, system: Stack, **options: Any) -> Iterator[Page]:
    """A fresh browser context on the API. The pages may load nothing from another origin (no
    CDN) and their script may raise nothing."""
    context = browser.new_context(base_url=system.api_url, viewport={"width": 1280, "height": 900},
                                  **options)
    elsewhere: list[str] = []
    errors: list[str] = []
    context.on("request", lambda request: None if request.url.startswith(f"{system.api_url}/")
               else elsewhere.append(request.url))
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert elsewhere == [] and errors == []


@pytest.fixture
def page(browser: Browser, system: Stack) -> Iterator[Page]:
    with opened(browser, system) as page:
        yield page


def place(api: httpx.Client, **kw: Any) -> str:
    response = api.post("/orders", json=order_body(**kw))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_mailed(api: httpx.Client, order_id: str, notice: str) -> dict[str, Any]:
    """The order once the saga has heard its e-mail went out (its story is complete)."""
    def told() -> dict[str, Any] | None:
        order: dict[str, Any] = api.get(f"/orders/{order_id}").json()
        return order if notice in step_names(order, "succeeded") else None
    found: dict[str, Any] = wait_for(told, 30, what=f"{notice} of {order_id}")
    return found


@contextmanager
def stopped(system: Stack, worker: str) -> Iterator[None]:
    """The worker frozen (SIGSTOP) for the block: what is sent to it waits in its queue."""
    pid = system.supervisor.pid(worker)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def bars(page: Page, step: str) -> Locator:
    return page.locator(f'svg.timeline g.bar[data-step="{step}"]')


def test_the_orders_page_lists_an_order_with_its_status_and_filters(api: httpx.Client,
                                                                    page: Page) -> None:
    confirmed = place(api, sku="BOOK-1", quantity=2)
    declined = place(api, token="tok_chargeDeclined")
    wait_terminal(api, confirmed)
    wait_terminal(api, declined)
    page.goto("/ui")
    expect(page.get_by_role("heading", name="Last hour")).to_be_visible()
    row = page.locator("table.orders tr", has=page.locator(f'a[href="/ui/orders/{confirmed}"]'))
    expect(row).to_contain_text(confirmed)
    expect(row).to_contain_text("confirmed")
    expect(row).to_contain_text("EUR 25.98")
    expect(row).to_contain_text(re.compile(r"just now|\d+ s ago"))  # its age
    failed_card = page.locator(".card.status-failed")
    expect(failed_card).to_contain_text("payment_declined")

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/ui\?status=failed"))
    expect(page.locator(f'a[href="/ui/orders/{declined}"]')).to_be_visible()
    expect(page.locator(f'a[href="/ui/orders/{confirmed}"]')).to_have_count(0)
    expect(page.locator("table.orders tbody")).not_to_contain_text("confirmed")

    # one order a page: the newest, then the next through the same cursor as GET /orders
    page.goto("/ui?limit=1")
    expect(page.locator("table.orders tbody tr")).to_have_count(1)
    expect(page.locator("table.orders tbody")).to_contain_text(declined)
    page.get_by_role("link", name="Older orders →").click()
    expect(page.locator("table.orders tbody tr")).to_have_count(1)
    expect(page.locator("table.orders tbody")).to_contain_text(confirmed)


def test_an_orders_page_draws_its_saga_as_it_runs_without_a_reload(api: httpx.Client,
                                                                  page: Page,
                                                                  system: Stack) -> None:
    with stopped(system, "payment"):
        order_id = place(api, token="tok_gatewayFlaky")
        page.goto(f"/ui/orders/{order_id}")
        expect(page.locator(".order-head .pill")).to_have_text("pending")
        expect(page.get_by_text("Nothing has happened yet")).to_be_visible()
        expect(page.locator("#live-state")).to_have_text("live")
        expect(page.get_by_text("reload it to see new steps")).to_be_hidden()
        page.evaluate("window.stillTheSamePage = true")
    # the payment worker goes on: two gateway timeouts, then the approval, stock, the e-mail
    for step in ("payment.authorize", "inventory.reserve", "notify.order_confirmed"):
        expect(bars(page, step).first).to_be_visible(timeout=LIVE_S)
        expect(page.locator("svg.timeline text.step-name", has_text=step)).to_be_visible()
    expect(page.locator(".order-head .pill")).to_have_text("confirmed", timeout=LIVE_S)
    expect(page.locator("#live-state")).to_have_text("finished", timeout=LIVE_S)
    # the retries: amber bars and their ticks on the payment's row
    expect(page.locator('svg.timeline g.bar.tone-retrying[data-step="payment.authorize"]')
           ).to_have_count(2)
    expect(page.locator('svg.timeline g.tick[data-step="payment.authorize"]')).to_have_count(2)
    # which worker ran each step is on its row
    expect(page.locator("svg.timeline g.row", has_text="payment.authorize")).to_contain_text(
        "payment@")
    assert page.evaluate("window.stillTheSamePage") is True  # swapped in, never reloaded


def test_a_declined_card_reads_in_words_and_a_refund_is_drawn_as_a_compensation(
        api: httpx.Client, page: Page) -> None:
    declined = place(api, token="tok_chargeDeclined")
    sold_out = place(api, sku="SOLDOUT-1")
    wait_mailed(api, declined, "notify.order_failed")
    wait_mailed(api, sold_out, "notify.order_failed")

    page.goto(f"/ui/orders/{declined}")
    expect(page.locator(".order-head .pill")).to_have_text("failed")
    expect(page.locator(".why")).to_contain_text(
        "The payment was declined: the card was declined by its bank.")
    expect(page.locator('svg.timeline g.bar.tone-failed[data-step="payment.authorize"]')
           ).to_have_count(1)
    expect(page.locator("svg.timeline g.row-compensation")).to_have_count(0)  # nothing to undo

    page.goto(f"/ui/orders/{sold_out}")
    expect(page.locator(".why")).to_contain_text("An item is out of stock: SOLDOUT-1")
    refund = page.locator('svg.timeline g.row-compensation[data-step="payment.refund"]')
    expect(refund).to_be_visible()
    expect(refund).to_contain_text("payment.refund")
    expect(page.locator('svg.timeline g.bar.tone-compensation[data-step="payment.refund"]')
           ).to_have_count(1)
    expect(page.locator('svg.timeline g.bar.tone-failed[data-step="inventory.reserve"]')
           ).to_have_count(1)
    # the compensation's row is drawn below every forward step's
    rows = page.locator("svg.timeline g.row").evaluate_all(
        "rows => rows.map(r => [r.dataset.step, r.getBoundingClientRect().top])")
    tops = dict(rows)
    assert tops["payment.refund"] > max(tops[s] for s in ("payment.authorize",
                                                          "inventory.reserve",
                                                          "notify.order_failed"))
    expect(page.locator("table.entries")).to_contain_text("out_of_stock")


def test_without_javascript_the_order_page_still_shows_the_timeline(
        api: httpx.Client, browser: Browser, system: Stack) -> None:
    order_id = place(api)
    wait_mailed(api, order_id, "notify.order_confirmed")
    with opened(browser, system, java_script_enabled=False) as page:
        page.goto(f"/ui/orders/{order_id}")
        expect(page.get_by_text("reload it to see new steps")).to_be_visible()
        expect(page.locator(".order-head .pill")).to_have_text("confirmed")
        for step in ("payment.authorize", "inventory.reserve", "notify.order_confirmed"):
            expect(bars(page, step)).to_have_count(1)
            expect(page.locator("table.entries")).to_contain_text(step)
        expect(page.locator("#live-state")).to_be_hidden()


def test_a_dead_letter_is_listed_its_order_needs_attention_and_the_form_re_drives_it(
        api: httpx.Client, page: Page, system: Stack) -> None:
    order_id = place(api)
    wait_mailed(api, order_id, "notify.order_confirmed")
    make_sender(system.env["REDIS_URL"]).send_task(
        "inventory.reserve", args=({"order": {"order_id": order_id}},))
    # the step answers the saga at once (it cannot read the message); the dead letter it kept is
    # reported within seconds
    wait_for(lambda: api.get("/dead-letters", params={"order_id": order_id}).json()
             ["dead_letters"], what="the dead letter's report")
    assert api.get(f"/orders/{order_id}").json()["needs_attention"]

    page.goto("/ui/dead-letters")
    letter = page.locator("table.dead-letters tr",
                          has=page.locator(f'a[href="/ui/orders/{order_id}"]'))
    expect(letter).to_contain_text("inventory")
    expect(letter).to_contain_text("inventory.reserve")
    expect(letter).to_contain_text("validation error")

    page.get_by_role("link", name="Needs attention").click()
    flagged = page.locator("table.attention-list tr",
                           has=page.locator(f'a[href="/ui/orders/{order_id}"]'))
    expect(flagged).to_contain_text("inventory.reserve")
    flagged.get_by_role("button", name="Re-drive").click()
    expect(page).to_have_url(f"{system.api_url}/ui/orders/{order_id}?retry=accepted")
    expect(page.get_by_role("status")).to_contain_text("Re-driven")
    # the order waited for nothing: the flag is answered at once
    expect(page.locator(".order-head .flag")).to_have_count(0)
    page.get_by_role("link", name="Needs attention").click()
    expect(page.locator(f'a[href="/ui/orders/{order_id}"]')).to_have_count(0)


def test_an_unknown_order_is_a_404_page(page: Page) -> None:
    response = page.goto(f"/ui/orders/{uuid.uuid4()}")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", name="No such order")).to_be_visible()
    expect(page.get_by_role("navigation", name="Pages")).to_contain_text("Dead letters")
