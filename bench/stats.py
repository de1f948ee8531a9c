"""Percentiles and rates, the same arithmetic for the saga and the baseline."""
import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was actually observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_ms(seconds: Sequence[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2),
            "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2) if ms else math.nan,
            "mean": round(sum(ms) / len(ms), 2) if ms else math.nan}


def rate(count: int, first_start: float, last_end: float) -> float:
    """Items per second from the first start to the last end."""
    span = last_end - first_start
    return round(count / span, 2) if span > 0 else math.nan


def ratio(a: float, b: float, digits: int = 3) -> float:
    return round(a / b, digits) if b else math.nan
