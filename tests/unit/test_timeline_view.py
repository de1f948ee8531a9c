"""The timeline's geometry (orchestrator/timeline_view.py): what GET /ui/orders/{id} draws, checked
as numbers, without a browser; and the words the pages use for reasons, money and time."""
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator import timeline_view as tv
from orchestrator import ui_words

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    name: str
    status: str
    at: datetime
    attempt: int = 1
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def step(name: str, status: str, start_ms: float | None, end_ms: float, attempt: int = 1,
         reason: str | None = None, worker: str | None = None, **detail: Any) -> Entry:
    """An entry that ran from `start_ms` to `end_ms` after T0 (no start: a moment)."""
    if start_ms is not None:
        detail["started_at"] = (T0 + timedelta(milliseconds=start_ms)).isoformat()
    if worker is not None:
        detail["worker"] = worker
    return Entry(name, status, T0 + timedelta(milliseconds=end_ms), attempt, reason, detail)


def row_names(timeline: tv.Timeline) -> list[str]:
    return [row.name for row in timeline.rows]


def test_nothing_yet_draws_no_rows() -> None:
    timeline = tv.layout([])
    assert timeline.rows == () and timeline.bars == () and timeline.start is None


def test_each_attempt_is_a_bar_from_its_start_to_its_end_on_a_shared_axis() -> None:
    timeline = tv.layout([
        step("payment.authorize", "succeeded", 0, 100, worker="payment@a"),
        step("inventory.reserve", "succeeded", 100, 300, worker="inventory@b"),
        step("notify.order_confirmed", "succeeded", 300, 1000, worker="notify@c"),
    ])
    assert row_names(timeline) == ["payment.authorize", "inventory.reserve",
                                   "notify.order_confirmed"]
    left, right = timeline.plot_left, timeline.plot_right
    per_ms = (right - left) / 1000
    pay, reserve, mail = timeline.bars
    assert (pay.x, pay.width) == pytest.approx((left, 100 * per_ms), abs=0.1)
    assert (reserve.x, reserve.width) == pytest.approx((left + 100 * per_ms, 200 * per_ms),
                                                       abs=0.1)
    assert mail.x + mail.width == pytest.approx(right, abs=0.1)
    assert {b.tone for b in timeline.bars} == {"forward"}
    # each bar sits in its own row's band, one row below the other
    for bar, row in zip(timeline.bars, timeline.rows, strict=True):
        assert row.y <= bar.y and bar.y + bar.height <= row.y + timeline.row_height
    assert [r.y for r in timeline.rows] == sorted({r.y for r in timeline.rows})
    assert timeline.rows[0].workers == "payment@a" and "on notify@c" in mail.title
    assert timeline.height == pytest.approx(timeline.axis_height + 3 * timeline.row_height
                                            + tv.BOTTOM_PAD)
    assert (timeline.start, timeline.end) == (T0, T0 + timedelta(seconds=1))


def test_compensations_go_below_the_forward_steps_in_their_own_colour() -> None:
    # out of stock: paid, the reservation fails, the payment is refunded, the customer told
    timeline = tv.layout([
        step("payment.authorize", "succeeded", 0, 50),
        step("inventory.reserve", "failed", 60, 80, reason="out_of_stock"),
        step("payment.refund", "succeeded", 90, 120),
        step("notify.order_failed", "succeeded", 130, 200),
    ])
    assert row_names(timeline) == ["payment.authorize", "inventory.reserve",
                                   "notify.order_failed", "payment.refund"]
    kinds = {row.name: row.kind for row in timeline.rows}
    assert kinds["payment.refund"] == "compensation"
    assert timeline.divider_y == timeline.rows[3].y
    tones = {bar.step: bar.tone for bar in timeline.bars}
    assert tones == {"payment.authorize": "forward", "inventory.reserve": "failed",
                     "payment.refund": "compensation", "notify.order_failed": "forward"}


def test_forward_steps_keep_the_sagas_order_even_when_reported_out_of_order() -> None:
    timeline = tv.layout([step("inventory.reserve", "succeeded", 5, 10),
                          step("payment.authorize", "succeeded", 0, 4)])
    assert row_names(timeline) == ["payment.authorize", "inventory.reserve"]


def test_retries_are_bars_with_a_tick_where_each_gave_up() -> None:
    timeline = tv.layout([
        step("payment.authorize", "retrying", 0, 20, attempt=1, error="GatewayTimeout",
             retry_in_s=0.05),
        step("payment.authorize", "retrying", 70, 90, attempt=2),
        step("payment.authorize", "succeeded", 190, 200, attempt=3),
    ])
    assert row_names(timeline) == ["payment.authorize"]
    assert [b.tone for b in timeline.bars] == ["retrying", "retrying", "forward"]
    row = timeline.rows[0]
    first, second = timeline.ticks
    assert first.x == pytest.approx(timeline.bars[0].x + timeline.bars[0].width, abs=0.1)
    assert second.x > first.x and row.y < first.y1 < first.y2 < row.y + timeline.row_height
    assert "retry_in_s: 0.05" in first.title and "GatewayTimeout" in first.title


def test_what_has_no_start_is_a_marker_at_its_moment() -> None:
    timeline = tv.layout([
        step("payment.authorize", "succeeded", 0, 100),
        step("order.cancel", "requested", None, 150, attempt=0, reason="cancelled"),
        step("inventory.reserve", "dead_lettered", None, 200, attempt=7),
        step("notify.order_confirmed", "failed", None, 300, attempt=0, reason="notify_error"),
    ])
    assert row_names(timeline)[-1] == "order.cancel"  # the requests' row comes last
    shapes = {m.step: (m.shape, m.tone) for m in timeline.markers}
    assert shapes == {"order.cancel": ("diamond", "request"),
                      "inventory.reserve": ("cross", "failed"),
                      "notify.order_confirmed": ("cross", "failed")}
    assert [b.step for b in timeline.bars] == ["payment.authorize"]
    cancel = next(m for m in timeline.markers if m.step == "order.cancel")
    assert cancel.x == pytest.approx(timeline.plot_left + 0.5 * (timeline.plot_right
                                                                 - timeline.plot_left), abs=0.1)
    assert cancel.path.startswith("M") and cancel.path.endswith("Z")


def test_an_entry_from_before_started_at_existed_is_a_dot() -> None:
    timeline = tv.layout([step("payment.authorize", "succeeded", None, 0)])
    [marker] = timeline.markers
    assert (marker.shape, marker.tone) == ("dot", "forward")
    # one moment alone: an axis of a second, the moment at its start
    assert marker.x == timeline.plot_left and timeline.axis[-1].label == "+1 s"


def test_a_tiny_attempt_still_shows_and_stays_inside_the_plot() -> None:
    timeline = tv.layout([step("payment.authorize", "succeeded", 0, 10_000),
                          step("inventory.reserve", "succeeded", 9_999.9, 10_000)])
    tiny = timeline.bars[1]
    assert tiny.width == tv.MIN_BAR_WIDTH
    assert tiny.x + tiny.width <= timeline.plot_right + 0.05


def test_a_start_after_the_end_from_another_clock_is_drawn_as_a_moment_bar() -> None:
    timeline = tv.layout([step("payment.authorize", "succeeded", 0, 100),
                          step("inventory.reserve", "succeeded", 150, 120)])
    assert timeline.bars[1].width == tv.MIN_BAR_WIDTH
    assert timeline.start == T0 and timeline.end == T0 + timedelta(milliseconds=120)


def test_an_unreadable_started_at_is_ignored() -> None:
    entry = Entry("payment.authorize", "succeeded", T0, detail={"started_at": "yesterday"})
    assert tv.started_at(entry) is None
    naive = Entry("payment.authorize", "succeeded", T0,
                  detail={"started_at": "2026-05-01T11:59:59"})  # read as UTC
    assert tv.started_at(naive) == T0 - timedelta(seconds=1)


@pytest.mark.parametrize("span,labels", [
    (1.0, ["0", "+200 ms", "+400 ms", "+600 ms", "+800 ms", "+1 s"]),
    (0.3, ["0", "+50 ms", "+100 ms", "+150 ms", "+200 ms", "+250 ms", "+300 ms"]),
    (45.0, ["0", "+10 s", "+20 s", "+30 s", "+40 s"]),
    (600.0, ["0", "+2 min", "+4 min", "+6 min", "+8 min", "+10 min"]),
    (4 * 3600.0, ["0", "+1 h", "+2 h", "+3 h", "+4 h"]),
])
def test_the_axis_has_a_few_round_labels(span: float, labels: list[str]) -> None:
    assert [tv.offset_label(s) for s in tv.axis_steps(span)] == labels
    assert len(tv.axis_steps(span)) <= tv.MAX_TICKS


def test_axis_ticks_span_the_plot() -> None:
    timeline = tv.layout([step("payment.authorize", "succeeded", 0, 1000)])
    assert timeline.axis[0].x == timeline.plot_left
    assert timeline.axis[-1].x == pytest.approx(timeline.plot_right)


@pytest.mark.parametrize("code,words", [
    ("payment_declined", "The payment was declined."),
    ("out_of_stock", "An item is out of stock."),
    ("payment_unavailable", "The payment gateway did not answer, even after every retry."),
    ("cancelled", "The order was cancelled on request."),
    ("timed_out", "The order was still pending past the saga's deadline, so it was undone."),
    ("inventory_error",
     "The inventory step crashed; the inventory service's log has the traceback."),
    ("something_new", "something_new"),  # an unknown code is shown as itself
    (None, ""),
])
def test_reasons_in_words(code: str | None, words: str) -> None:
    assert ui_words.reason_words(code) == words


def test_the_failed_steps_detail_makes_the_reason_precise() -> None:
    assert ui_words.why("payment_declined", {"decline_code": "card_declined"}) == \
        "The payment was declined: the card was declined by its bank."
    assert ui_words.why("out_of_stock", {"sku": "SOLDOUT-1", "requested": 2}) == \
        "An item is out of stock: SOLDOUT-1 (2 asked for)."
    assert ui_words.why("cancelled", {"reason": "changed my mind"}) == \
        "The order was cancelled on request: “changed my mind”."


def test_money_age_and_time() -> None:
    assert ui_words.money(1250, "EUR") == "EUR 12.50"
    assert ui_words.money(5, "EUR") == "EUR 0.05"
    assert ui_words.age(T0, T0 + timedelta(seconds=2)) == "just now"
    assert ui_words.age(T0, T0 + timedelta(seconds=42)) == "42 s ago"
    assert ui_words.age(T0, T0 + timedelta(minutes=3, seconds=10)) == "3 min ago"
    assert ui_words.age(T0, T0 + timedelta(hours=5)) == "5 h ago"
    assert ui_words.age(T0, T0 + timedelta(days=2)) == "2 days ago"
    assert ui_words.iso(T0) == "2026-05-01T12:00:00Z"
    assert ui_words.iso(T0 + timedelta(microseconds=1500), ms=True) == "2026-05-01T12:00:00.001Z"
    assert ui_words.duration(0.085) == "85 ms"
    assert ui_words.duration(184) == "3 min 4 s"
