"""The bench's outputs: a table on the terminal (the same Markdown goes into docs/bench.md),
`latest.json` with every figure, and `latest.png`.

    python -m bench.report [var/bench/latest.json]   # the Markdown again, from a saved run
"""
import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _q(figures: dict[str, Any]) -> str:
    return f"{_f(figures['p50'])} / {_f(figures['p95'])} / {_f(figures['p99'])}"


def machine_line(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    return (f"{m['cpu_count']} cores ({m['cpu_model'] or 'unknown CPU'}), {m['memory_gib']} GiB, "
            f"{m['os']}, Python {m['python']}; load average at start {m['load_avg_at_start'][0]}; "
            f"workers --pool {s['pool']} -c {s['worker_concurrency']}, {s['database']}, "
            f"{s['broker']}")


def table(result: dict[str, Any]) -> str:
    bare, saga = result["bare"], result["saga"]
    lat = result["latency_ratio"]
    rows = [
        ("", "bare Celery chain", "order saga", "saga ÷ bare"),
        ("---", "---:", "---:", "---:"),
        (f"throughput: burst of {bare['burst']} chains / {saga['burst']} orders",
         f"{_f(bare['chains_per_s'])} chains/s{_runs(bare)}",
         f"{_f(saga['orders_per_s'])} orders/s",
         f"**{_f(result['throughput_ratio'], 2)}**"),
        ("latency p50, one at a time (ms)", _f(bare["latency_ms"]["p50"]),
         _f(saga["latency_ms"]["p50"]), f"{_f(lat['p50'])}×"),
        ("latency p95, one at a time (ms)", _f(bare["latency_ms"]["p95"]),
         _f(saga["latency_ms"]["p95"]), f"{_f(lat['p95'])}×"),
        ("latency p99, one at a time (ms)", _f(bare["latency_ms"]["p99"]),
         _f(saga["latency_ms"]["p99"]), f"{_f(lat['p99'])}×"),
        (f"under load, {_f(saga['under_load_orders_per_s'])} orders/s paced: "
         "latency p50 / p95 / p99 (ms)", "", _q(saga["latency_under_load_ms"]), ""),
        ("under load: the API's own POST p50 / p95 / p99 (ms)", "",
         _q(saga["post_under_load_ms"]), ""),
        ("unloaded: the API's own POST p50 / p95 / p99 (ms)", "", _q(saga["post_ms"]), ""),
        ("in the burst (queueing included): latency p50 / p95 / p99 (ms)",
         _q(bare["latency_in_burst_ms"]), _q(saga["latency_in_burst_ms"]), ""),
    ]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    scaling = result.get("scaling")
    if scaling:
        per = ", ".join(f"{k} → {_f(v)}" for k, v in scaling["payment"].items())
        step = ", ".join(f"{k} → {_f(v)}" for k, v in scaling["payment_step_per_s"].items())
        lines += ["", f"Scaling payment (gateway {scaling['gateway_latency_ms']} ms, each worker "
                      f"-c {scaling['worker_concurrency']}), workers → orders/s: {per}: "
                      f"**{_f(scaling['speedup'], 2)}×** from {scaling['workers_from_to'][0]} to "
                      f"{scaling['workers_from_to'][1]} workers (payment.authorize alone: {step} "
                      f"per s)."]
    memory = result.get("memory")
    rss = saga["rss_mib"]
    after = memory["after_mib"] if memory else rss["after_load"]
    kinds = [k for k in rss["idle"] if k != "bench"]
    lines += ["", "| RSS (MiB) | " + " | ".join(kinds) + " |",
              "|---|" + "---:|" * len(kinds),
              "| idle | " + " | ".join(_f(rss["idle"].get(k)) for k in kinds) + " |",
              "| after the run | " + " | ".join(_f(after.get(k)) for k in kinds) + " |"]
    bare_rss = bare["rss_mib"]
    lines += ["", "Bare workers' RSS (MiB), idle → after: " + ", ".join(
        f"{k} {_f(bare_rss['idle'][k])} → {_f(bare_rss['after'][k])}" for k in bare_rss["idle"])
        + "."]
    series = memory["api_series"] if memory else saga["api_rss_series"]
    points = ", ".join(f"{p['orders']:,} → {_f(p['api_rss_mib'])}" for p in series)
    lines += ["", f"API RSS (MiB) by orders served: {points}."]
    if memory:
        verdict = "flat" if memory["api_rss_flat"] else "STILL GROWING"
        lines[-1] += (f" Over the second half: {_f(memory['api_growth_second_half_mib'])} MiB: "
                      f"{verdict}.")
    lines += ["", "CPU per item in the burst (ms): bare chain " + ", ".join(
        f"{k} {_f(v)}" for k, v in bare["cpu_ms_per_chain"].items())
        + "; saga order " + ", ".join(f"{k} {_f(v)}" for k, v in saga["cpu_ms_per_order"].items())
        + " (client: the load driver; bench: the embedded SMTP server)."]
    def top(calls: dict[str, float], n: int = 6) -> str:
        return ", ".join(f"{k} {_f(v)}" for k, v in list(calls.items())[:n] if k != "total")

    lines += ["Redis commands per item: bare chain "
              f"{_f(bare['redis_commands_per_chain']['total'])} "
              f"({top(bare['redis_commands_per_chain'])}); saga order "
              f"{_f(saga['redis_commands_per_order']['total'])} "
              f"({top(saga['redis_commands_per_order'])})."]
    where = saga.get("where_time_goes_ms")
    if where:
        lines += ["", "Where an unloaded order's time goes (medians, ms): " + "; ".join(
            f"{k} {_f(v)}" for k, v in where.items()) + "."]
    targets = result["targets"]
    lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}"
                                           for k, ok in targets.items()) + "."]
    return "\n".join(lines)


def profile_table(summary: dict[str, Any]) -> str:
    lines = ["Where each process spends its Python time during the burst (py-spy, GIL holder):"]
    for name, figures in summary.items():
        lines.append(f"  {name} ({figures['samples']} samples)")
        lines.append("    by library: " + ", ".join(f"{k} {v:g}%" for k, v in
                                                     figures["by_library_pct"].items()))
        for frames, pct in figures["by_our_code_pct"].items():
            lines.append(f"    {pct:5.1f}%  {frames}")
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(result), indent=2, allow_nan=False) + "\n")


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be computed is null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def draw(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaling, memory = result.get("scaling"), result.get("memory")
    panels = 1 + bool(scaling) + bool(memory)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    series = [("bare chain, one at a time", result["bare"]["samples_ms"]),
              ("saga, one at a time", result["saga"]["samples_ms"]),
              (f"saga, under load ({result['saga']['under_load_orders_per_s']:g}/s)",
               result["saga"]["samples_under_load_ms"])]
    for label, samples in series:
        ordered = sorted(samples)
        if ordered:
            ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("POST → confirmed / chain start → end (ms, log)")
    ax.set_ylabel("fraction of orders")
    ax.set_title("Latency distribution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    column = 1
    if scaling:
        ax = axes[0][column]
        column += 1
        workers = [int(k) for k in scaling["payment"]]
        rates = list(scaling["payment"].values())
        ax.plot(workers, rates, "o-", label="measured")
        ax.plot(workers, [rates[0] * w / workers[0] for w in workers], "--", color="grey",
                label="linear")
        ax.set_xticks(workers)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("payment workers")
        ax.set_ylabel("orders/s")
        ax.set_title(f"Scaling payment (gateway {scaling['gateway_latency_ms']} ms)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if memory:
        ax = axes[0][column]
        points = memory["api_series"]
        ax.plot([p["orders"] for p in points], [p["api_rss_mib"] for p in points], "o-")
        ax.set_xlabel("orders the API has served")
        ax.set_ylabel("API RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("API memory")
        ax.grid(True, alpha=0.3)
    m = result["machine"]
    fig.suptitle(f"Order saga vs bare Celery: {m['cpu_count']} cores, "
                 f"{result['settings']['database']}, throughput ratio "
                 f"{result['throughput_ratio']:.2f}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    return f"Machine: {machine_line(result)}.\n\n{table(result)}"


def _runs(bare: dict[str, Any]) -> str:
    """The two bare bursts the baseline is the mean of, when there were two."""
    runs = bare.get("chains_per_s_runs")
    return f" (mean of {_f(runs[0])} before and {_f(runs[1])} after the saga)" if runs else ""


if __name__ == "__main__":
    saved = Path(sys.argv[1] if len(sys.argv) > 1 else "var/bench/latest.json")
    print(markdown(json.loads(saved.read_text())))

