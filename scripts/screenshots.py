"""`make screenshots`: the operator's pages as a person sees them, for docs/ and the README.

Starts the whole system (as `make run` does, in a var directory of its own), places a handful
of orders that tell every kind of story (confirmed, retried, declined, out of stock and
compensated, cancelled, one flagged by a dead letter), then photographs each page in Debian's
chromium, driven by Playwright. Needs what `make test` needs (`make test-deps` installs
chromium)."""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.net import free_port  # noqa: E402 (the repository on the path first)
from devstack.stack import Stack  # noqa: E402
from runtime.celery_app import make_app  # noqa: E402
from runtime.deadletters import LoggedOnly  # noqa: E402


def body(token: str = "tok_visa", sku: str = "BOOK-1", quantity: int = 1,
         email: str = "ada@example.com") -> dict[str, Any]:
    return {"customer_email": email, "items": [{"sku": sku, "quantity": quantity}],
            "payment_token": token}


def ended(api: httpx.Client, order_id: str, notice: str) -> dict[str, Any]:
    """The order once its e-mail went out (its story is whole)."""
    for _ in range(300):
        order: dict[str, Any] = api.get(f"/orders/{order_id}").json()
        if any(s["name"] == notice and s["status"] == "succeeded" for s in order["steps"]):
            return order
        time.sleep(0.1)
    raise RuntimeError(f"order {order_id} did not get {notice}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python scripts/screenshots.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where the PNG files go (default: docs/)")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("no `chromium` on PATH: `make test-deps` installs it (as root, with apt)")
        return 1
    with tempfile.TemporaryDirectory() as var, \
            Stack(Path(var), env={"REDIS_URL": "", "BROKER_URL": "", "SMTP_HOST": "",
                                  "PAYMENT_RETRY_BACKOFF_S": "0.2"},
                  api_port=free_port()) as stack:
        stack.wait_ready(90)
        with httpx.Client(base_url=stack.api_url, timeout=30) as api:
            def place(**kw: Any) -> str:
                return str(api.post("/orders", json=body(**kw)).json()["id"])
            confirmed = place(quantity=2)
            flaky = place(token="tok_gatewayFlaky", email="grace@example.com")
            place(token="tok_chargeDeclined", email="alan@example.com")
            out_of_stock = place(sku="LIMITED-1", quantity=50, email="edsger@example.com")
            cancelled = place(sku="MUG-1", email="barbara@example.com")
            flagged = place(email="donald@example.com")
            for order_id in (confirmed, flaky, flagged):
                ended(api, order_id, "notify.order_confirmed")
            ended(api, cancelled, "notify.order_confirmed")
            api.post(f"/orders/{cancelled}/cancel", json={"reason": "customer changed their mind"})
            ended(api, cancelled, "notify.order_cancelled")
            ended(api, out_of_stock, "notify.order_failed")
            # a message about an order that its service cannot read: kept as a dead letter,
            # reported to the saga, and the order flagged for a person
            make_app("screenshots", stack.env["REDIS_URL"], LoggedOnly()).send_task(
                "inventory.reserve", args=({"order": {"order_id": flagged}},))
            for _ in range(100):
                if api.get(f"/orders/{flagged}").json()["needs_attention"]:
                    break
                time.sleep(0.1)
        shots = {"ui-orders.png": "/ui", "ui-order-failed.png": f"/ui/orders/{out_of_stock}",
                 "ui-order-retried.png": f"/ui/orders/{flaky}",
                 "ui-order-cancelled.png": f"/ui/orders/{cancelled}",
                 "ui-attention.png": "/ui/attention", "ui-dead-letters.png": "/ui/dead-letters"}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(base_url=stack.api_url,
                                    viewport={"width": 1280, "height": 800})
            for name, path in shots.items():
                page.goto(path)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(args.out / name), full_page=True)
                print(f"{args.out / name}: {path}")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
