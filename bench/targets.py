"""What one run's figures say: the saga against Celery's floor (the bare chain), against the
hand-rolled chain and, with --peers, against DBOS; and which targets that meets. A target is
printed as met or NOT met, never asserted: a shared 2-core host is too noisy for that."""
from typing import Any

from bench.stats import ratio

QUANTILES = ("p50", "p95", "p99")


def compare(result: dict[str, Any]) -> dict[str, Any]:
    bare, saga = result["bare"], result["saga"]
    out: dict[str, Any] = {
        "throughput_ratio": ratio(saga["orders_per_s"], bare["chains_per_s"]),
        "latency_ratio": {q: ratio(saga["latency_ms"][q], bare["latency_ms"][q], 2)
                          for q in QUANTILES},
    }
    targets = {
        "throughput_ratio >= 0.4": out["throughput_ratio"] >= 0.4,
        "throughput_ratio >= 0.7 (aim)": out["throughput_ratio"] >= 0.7,
        "unloaded p50 <= 30 ms": saga["latency_ms"]["p50"] <= 30,
        "unloaded p99 <= 80 ms": saga["latency_ms"]["p99"] <= 80,
    }
    handrolled = result.get("handrolled")
    if handrolled:
        ratios = against(saga, handrolled, "handrolled")
        out["ratios"] = ratios
        targets.update({
            "throughput vs hand-rolled >= 0.65": ratios["throughput_vs_handrolled"] >= 0.65,
            "throughput vs hand-rolled >= 0.8 (aim)": ratios["throughput_vs_handrolled"] >= 0.8,
            "CPU per order <= 1.5x hand-rolled": ratios["cpu_vs_handrolled"] <= 1.5,
            "unloaded p50 <= hand-rolled's": ratios["p50_vs_handrolled"] <= 1.0,
            "unloaded p99 <= 1.3x hand-rolled's": ratios["p99_vs_handrolled"] <= 1.3,
        })
        dbos = result.get("peers", {}).get("dbos", {})
        if "orders_per_s" in dbos:
            ratios.update(against(saga, dbos, "dbos"))
            targets["ahead of DBOS on throughput"] = ratios["throughput_vs_dbos"] > 1.0
            targets["ahead of DBOS on unloaded p50"] = ratios["p50_vs_dbos"] < 1.0
    scaling = result.get("scaling")
    if scaling and scaling["workers_from_to"] == [1, 4]:
        targets["payment 1 -> 4 workers >= 3x"] = scaling["speedup"] >= 3
    memory = result.get("memory")
    if memory and memory.get("api_rss_flat") is not None:
        targets["API RSS flat"] = memory["api_rss_flat"]
    out["targets"] = targets
    return out


def against(saga: dict[str, Any], other: dict[str, Any], name: str) -> dict[str, float]:
    """Saga ÷ other: throughput (above 1: the saga is faster), CPU per order and unloaded
    latencies (below 1: the saga is cheaper, sooner). `p*`: POST → confirmed, which for the saga
    comes before its e-mail and for a plain contender after it; `email_p*`: POST → e-mail sent,
    the same moment for all."""
    ratios = {f"throughput_vs_{name}": ratio(saga["orders_per_s"], other["orders_per_s"]),
              f"cpu_vs_{name}": ratio(saga["cpu_ms_per_order"]["total"],
                                      other["cpu_ms_per_order"]["total"]),
              f"redis_vs_{name}": ratio(saga["redis_commands_per_order"]["total"],
                                        other["redis_commands_per_order"]["total"])}
    for q in QUANTILES:
        ratios[f"{q}_vs_{name}"] = ratio(saga["latency_ms"][q], other["latency_ms"][q], 2)
        ratios[f"email_{q}_vs_{name}"] = ratio(saga["email_latency_ms"][q],
                                               other["email_latency_ms"][q], 2)
    return ratios
