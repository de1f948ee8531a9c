"""An order's timeline as a drawing (GET /ui/orders/{id}): one row per step name, forward steps
on top, compensations below them, the saga's own requests (`order.cancel`, `order.retry`) last;
each attempt a bar from its start (`detail.started_at`) to its end (`at`) across one time axis,
a retry a tick at the moment it was scheduled, and whatever has no start (a request, a dead
letter, a crash the errback reported, an entry older than `started_at`) a marker at its moment.

Pure geometry in the SVG's user units: the template only draws what this returns, and a test
checks it without a browser."""
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from orchestrator import saga
from orchestrator.ui_words import duration, iso

# the drawing's size, in SVG user units (the page scales it to its width)
WIDTH = 960.0
LABEL_WIDTH = 200.0  # the step names' column
RIGHT_PAD = 28.0  # room for the last axis label
AXIS_HEIGHT = 30.0
ROW_HEIGHT = 38.0
BAR_HEIGHT = 16.0
MIN_BAR_WIDTH = 3.0  # a step of a millisecond still shows
MARKER_SIZE = 6.0
BOTTOM_PAD = 8.0
MAX_TICKS = 8
# axis steps, in seconds: the smallest that keeps the axis at MAX_TICKS or fewer labels
NICE_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
              120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

RowKind = Literal["forward", "compensation", "request"]
# what colours a shape: a forward step's success, a compensation's, a failure, a retry, a request
Tone = Literal["forward", "compensation", "failed", "retrying", "request"]
Shape = Literal["diamond", "cross", "dot"]
REQUEST_PREFIX = "order."  # orchestrator.steering's entries: what was asked through the API


class EntryLike(Protocol):
    """A timeline entry as the geometry reads it (orchestrator.models.SagaEvent is one)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def attempt(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Row:
    name: str
    kind: RowKind
    y: float  # top of the row's band
    workers: str  # the workers that ran its attempts, for the label's second line

    @property
    def mid(self) -> float:
        return round(self.y + ROW_HEIGHT / 2, 1)


@dataclass(frozen=True)
class Bar:
    """One attempt, from its start to its end."""

    step: str
    x: float
    y: float
    width: float
    height: float
    tone: Tone
    title: str


@dataclass(frozen=True)
class Tick:
    """A retry, on its step's row at the moment the attempt gave up."""

    step: str
    x: float
    y1: float
    y2: float
    title: str


@dataclass(frozen=True)
class Marker:
    """Something that happened at one moment (no start to draw a bar from)."""

    step: str
    x: float
    y: float
    shape: Shape
    tone: Tone
    title: str

    @property
    def path(self) -> str:
        """The marker's outline as an SVG path."""
        x, y, s = self.x, self.y, MARKER_SIZE
        if self.shape == "diamond":
            return f"M{x:g},{y - s:g} L{x + s:g},{y:g} L{x:g},{y + s:g} L{x - s:g},{y:g} Z"
        if self.shape == "cross":
            r = s * 0.8
            return (f"M{x - r:g},{y - r:g} L{x + r:g},{y + r:g} "
                    f"M{x - r:g},{y + r:g} L{x + r:g},{y - r:g}")
        r = s * 0.75
        return f"M{x - r:g},{y:g} a{r:g},{r:g} 0 1,0 {2 * r:g},0 a{r:g},{r:g} 0 1,0 {-2 * r:g},0"


@dataclass(frozen=True)
class AxisTick:
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    width: float
    height: float
    rows: tuple[Row, ...] = ()
    bars: tuple[Bar, ...] = ()
    ticks: tuple[Tick, ...] = ()
    markers: tuple[Marker, ...] = ()
    axis: tuple[AxisTick, ...] = ()
    start: datetime | None = None  # the axis' zero
    end: datetime | None = None
    divider_y: float | None = None  # between the forward steps and the rows below them

    @property
    def plot_left(self) -> float:
        return LABEL_WIDTH

    @property
    def plot_right(self) -> float:
        return self.width - RIGHT_PAD

    @property
    def row_height(self) -> float:
        return ROW_HEIGHT

    @property
    def axis_height(self) -> float:
        return AXIS_HEIGHT


def started_at(entry: EntryLike) -> datetime | None:
    """The attempt's start as its worker reported it; None when it did not (or not legibly)."""
    raw = entry.detail.get("started_at")
    if not isinstance(raw, str):
        return None
    try:
        start = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return start if start.tzinfo else start.replace(tzinfo=UTC)


def kind_of(name: str) -> RowKind:
    if name in saga.COMPENSATIONS:
        return "compensation"
    if name.startswith(REQUEST_PREFIX):
        return "request"
    return "forward"


def layout(entries: Sequence[EntryLike], width: float = WIDTH) -> Timeline:
    """The drawing of `entries` (an order's timeline, in any order)."""
    if not entries:
        return Timeline(width, AXIS_HEIGHT + BOTTOM_PAD)
    rows = _rows(entries)
    by_name = {row.name: row for row in rows}
    starts = {id(e): _clamped_start(e) for e in entries}
    t0 = min([e.at for e in entries] + [s for s in starts.values() if s is not None])
    t1 = max(e.at for e in entries)
    span = max((t1 - t0).total_seconds(), 0.0) or 1.0  # one moment: a second's axis around it
    left, right = LABEL_WIDTH, width - RIGHT_PAD

    def x(at: datetime) -> float:
        return left + (at - t0).total_seconds() / span * (right - left)

    bars: list[Bar] = []
    ticks: list[Tick] = []
    markers: list[Marker] = []
    for entry in entries:
        row, start = by_name[entry.name], starts[id(entry)]
        tone = _tone(entry, row.kind)
        title = _title(entry, start)
        if start is not None and entry.status != "requested":
            x0 = x(start)
            w = max(x(entry.at) - x0, MIN_BAR_WIDTH)
            x0 = min(x0, right - w)
            bars.append(Bar(entry.name, round(x0, 1), round(row.mid - BAR_HEIGHT / 2, 1),
                            round(w, 1), BAR_HEIGHT, tone, title))
        if entry.status == "retrying":
            ticks.append(Tick(entry.name, round(x(entry.at), 1), round(row.y + 5, 1),
                              round(row.y + ROW_HEIGHT - 5, 1), title))
        elif start is None or entry.status == "requested":
            markers.append(Marker(entry.name, round(x(entry.at), 1), row.mid,
                                  _shape(entry), tone, title))
    first_below = next((r for r in rows if r.kind != "forward"), None)
    has_forward = any(r.kind == "forward" for r in rows)
    return Timeline(
        width=width, height=AXIS_HEIGHT + ROW_HEIGHT * len(rows) + BOTTOM_PAD,
        rows=tuple(rows), bars=tuple(bars), ticks=tuple(ticks), markers=tuple(markers),
        axis=tuple(AxisTick(round(x(t0) + s / span * (right - left), 1), offset_label(s))
                   for s in axis_steps(span)),
        start=t0, end=t1,
        divider_y=first_below.y if first_below is not None and has_forward else None)


def axis_steps(span_s: float) -> list[float]:
    """Offsets from the axis' zero, in seconds, at a round step: at most MAX_TICKS of them."""
    step = next((s for s in NICE_STEPS if span_s / s <= MAX_TICKS - 1), None)
    if step is None:  # longer than a week: whole days
        step = 86400.0 * math.ceil(span_s / 86400 / (MAX_TICKS - 1))
    count = int(span_s / step + 1e-9)
    return [round(k * step, 6) for k in range(count + 1)]


def offset_label(seconds: float) -> str:
    """An axis label: `0`, `+250 ms`, `+1.5 s`, `+2 min`, `+3 h`, `+2 d`."""
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit != "min" and seconds >= size):
            return f"+{round(seconds / size, 3):g} {unit}"
    if seconds >= 1:
        return f"+{round(seconds, 3):g} s"
    return f"+{round(seconds * 1000, 3):g} ms"


def _rows(entries: Sequence[EntryLike]) -> list[Row]:
    """Forward steps first (the saga's actions in their order, then others as they came),
    then compensations, then requests, each as they first appear."""
    first: dict[str, int] = {}
    workers: dict[str, list[str]] = {}
    for index, entry in enumerate(sorted(entries, key=lambda e: e.at)):
        first.setdefault(entry.name, index)
        worker = entry.detail.get("worker")
        names = workers.setdefault(entry.name, [])
        if isinstance(worker, str) and worker not in names:
            names.append(worker)
    group = {"forward": 0, "compensation": 1, "request": 2}

    def rank(name: str) -> tuple[int, int]:
        kind = kind_of(name)
        if kind == "forward" and name in saga.ACTIONS:
            return group[kind], saga.ACTIONS.index(name) - len(saga.ACTIONS)
        return group[kind], first[name]

    ordered = sorted(first, key=rank)
    return [Row(name, kind_of(name), AXIS_HEIGHT + i * ROW_HEIGHT, ", ".join(workers[name]))
            for i, name in enumerate(ordered)]


def _clamped_start(entry: EntryLike) -> datetime | None:
    start = started_at(entry)
    # two clocks may disagree a little: a start after the end is drawn as the end
    return None if start is None else min(start, entry.at)


def _tone(entry: EntryLike, kind: RowKind) -> Tone:
    if entry.status in ("failed", saga.DEAD_LETTERED):
        return "failed"
    if entry.status == "retrying":
        return "retrying"
    if kind == "request" or entry.status == "requested":
        return "request"
    return kind


def _shape(entry: EntryLike) -> Shape:
    if entry.status == "requested":
        return "diamond"
    if entry.status in ("failed", saga.DEAD_LETTERED):
        return "cross"
    return "dot"


def _title(entry: EntryLike, start: datetime | None) -> str:
    """The shape's tooltip: what, when, how long, on which worker, why."""
    lines = [f"{entry.name} · attempt {entry.attempt} · {entry.status}"
             + (f" ({entry.reason})" if entry.reason else "")]
    if start is not None:
        lines.append(f"{iso(start, ms=True)} → {iso(entry.at, ms=True)} "
                     f"({duration((entry.at - start).total_seconds())})")
    else:
        lines.append(iso(entry.at, ms=True))
    worker = entry.detail.get("worker")
    if isinstance(worker, str):
        lines.append(f"on {worker}")
    for key in ("error", "retry_in_s", "decline_code", "dead_letter_id", "sent"):
        if key in entry.detail:
            lines.append(f"{key}: {str(entry.detail[key])[:200]}")
    return "\n".join(lines)
