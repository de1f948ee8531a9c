"""The bench's outputs: a table on the terminal (the same Markdown goes into docs/bench.md),
`latest.json` with every figure, and `latest.png`.

    python -m bench.report [var/bench/latest.json]   # the Markdown again, from a saved run
"""
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    if value is None or value != value:  # nothing, or NaN: a figure that could not be had
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


def contenders(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The plain contenders this run measured: the hand-rolled chain, DBOS with --peers."""
    found = [("hand-rolled chain", result["handrolled"])] if "handrolled" in result else []
    dbos = result.get("peers", {}).get("dbos", {})
    if "orders_per_s" in dbos:
        found.append(("DBOS workflow", dbos))
    return found


def table(result: dict[str, Any]) -> str:
    bare, saga = result["bare"], result["saga"]
    lat = result["latency_ratio"]
    others = contenders(result)
    ratios = result.get("ratios", {})
    # saga ÷ each contender, then saga ÷ bare: the figure the column is about, or nothing
    names = {"hand-rolled chain": "handrolled", "DBOS workflow": "dbos"}

    def versus(key: str, bare_value: str = "") -> list[str]:
        cells = [_f(ratios.get(f"{key}_vs_{names[label]}"), 2) for label, _ in others]
        return [*(c if c == "–" else f"{c}×" for c in cells), bare_value]

    def row(label: str, bare_cell: str, cell: Callable[[dict[str, Any]], str], saga_cell: str,
            ratio_cells: list[str]) -> tuple[str, ...]:
        return (label, bare_cell, *(cell(fig) for _, fig in others), saga_cell, *ratio_cells)

    head = ("", "Celery's floor: bare chain", *(label for label, _ in others), "order saga",
            *(f"saga ÷ {label.split()[0]}" for label, _ in others), "saga ÷ bare")
    throughput = [_f(ratios.get(f"throughput_vs_{names[label]}"), 2) for label, _ in others]
    rows = [
        head,
        ("---", *("---:" for _ in head[1:])),
        row("throughput, burst (chains or orders per s)",
            f"{_f(bare['chains_per_s'])} ({bare['burst']} chains{_runs(bare, 'chains')})",
            lambda f: f"{_f(f['orders_per_s'])} ({f['burst']} orders{_runs(f, 'orders')})",
            f"{_f(saga['orders_per_s'])} ({saga['burst']} orders)",
            [f"**{c}**" for c in throughput] + [f"**{_f(result['throughput_ratio'], 2)}**"]),
    ]
    def quantile(q: str) -> Callable[[dict[str, Any]], str]:
        return lambda figures: _f(figures["latency_ms"][q])

    for q in ("p50", "p95", "p99"):
        rows.append(row(f"POST → confirmed {q}, one at a time (ms)", _f(bare["latency_ms"][q]),
                        quantile(q), _f(saga["latency_ms"][q]), versus(q, f"{_f(lat[q])}×")))
    if "email_latency_ms" in saga:
        rows.append(row("POST → e-mail sent p50 / p95 / p99, one at a time (ms)", "",
                        lambda f: _q(f["email_latency_ms"]), _q(saga["email_latency_ms"]),
                        [f"p50 {c}" if c else c for c in versus("email_p50")]))
    rows += [
        row("CPU per order, every process (ms)", _f(bare["cpu_ms_per_chain"]["total"]),
            lambda f: _f(f["cpu_ms_per_order"]["total"]), _f(saga["cpu_ms_per_order"]["total"]),
            versus("cpu", _f(ratio_of(saga["cpu_ms_per_order"]["total"],
                                      bare["cpu_ms_per_chain"]["total"]), 2) + "×")),
        row("Redis commands per order", _f(bare["redis_commands_per_chain"]["total"]),
            lambda f: _f(f["redis_commands_per_order"]["total"]),
            _f(saga["redis_commands_per_order"]["total"]),
            versus("redis", _f(ratio_of(saga["redis_commands_per_order"]["total"],
                                        bare["redis_commands_per_chain"]["total"]), 2) + "×")),
        row("orders lost: never ended, nothing left in flight to end them", "",
            lambda f: str(f.get("orders_lost", "")), str(saga.get("orders_lost", "")),
            [""] * (len(others) + 1)),
        row(f"under load, {_f(saga['under_load_orders_per_s'])} orders/s paced: "
            "latency p50 / p95 / p99 (ms)", "", lambda f: "", _q(saga["latency_under_load_ms"]),
            [""] * (len(others) + 1)),
        row("under load: the API's own POST p50 / p95 / p99 (ms)", "", lambda f: "",
            _q(saga["post_under_load_ms"]), [""] * (len(others) + 1)),
        row("unloaded: the API's own POST p50 / p95 / p99 (ms)", "",
            lambda f: _q(f["post_ms"]), _q(saga["post_ms"]), [""] * (len(others) + 1)),
        row("in the burst (queueing included): latency p50 / p95 / p99 (ms)",
            _q(bare["latency_in_burst_ms"]), lambda f: _q(f["latency_in_burst_ms"]),
            _q(saga["latency_in_burst_ms"]), [""] * (len(others) + 1)),
    ]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    if others:
        lines += ["", "POST → confirmed: the saga's order reads `confirmed` once its stock is "
                      "reserved, before its e-mail; a plain contender's once its last step has "
                      "sent the e-mail and marked the order. POST → e-mail sent: when the "
                      "embedded SMTP server stored the confirmation, the same moment for all. "
                      "A bare chain's latency is its first publish to its last task's end."]
    lines += broker_table(result)
    skipped = result.get("peers", {}).get("dbos", {}).get("skipped")
    if skipped:
        lines += ["", f"DBOS (--peers): {skipped}."]
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
    for label, f in others:
        plain = f["rss_mib"]
        lines[-1] += (f" The {label}'s (MiB): " + ", ".join(
            f"{k} {_f(plain['idle'][k])} → {_f(plain['after_load'].get(k))}"
            for k in plain["idle"] if k != "bench") + ".")
    series = memory["api_series"] if memory else saga["api_rss_series"]
    points = ", ".join(f"{p['orders']:,} → {_f(p['api_rss_mib'])}" for p in series)
    lines += ["", f"API RSS (MiB) by orders served: {points}."]
    if memory:
        verdict = "flat" if memory["api_rss_flat"] else "STILL GROWING"
        lines[-1] += (f" Over the second half: {_f(memory['api_growth_second_half_mib'])} MiB: "
                      f"{verdict}.")
    def each(figures: dict[str, float]) -> str:
        return ", ".join(f"{k} {_f(v)}" for k, v in figures.items())

    def top(calls: dict[str, float], n: int = 6) -> str:
        return ", ".join(f"{k} {_f(v)}" for k, v in list(calls.items())[:n] if k != "total")

    lines += ["", "CPU per item in the burst (ms): bare chain " + each(bare["cpu_ms_per_chain"])
              + "".join(f"; {label} {each(f['cpu_ms_per_order'])}" for label, f in others)
              + "; saga order " + each(saga["cpu_ms_per_order"])
              + " (client: the load driver; bench: the embedded SMTP server)."]
    lines += ["Redis commands per item: bare chain "
              f"{_f(bare['redis_commands_per_chain']['total'])} "
              f"({top(bare['redis_commands_per_chain'])})"
              + "".join(f"; {label} {_f(f['redis_commands_per_order']['total'])}"
                        f" ({top(f['redis_commands_per_order']) or 'none'})" for label, f in others)
              + f"; saga order {_f(saga['redis_commands_per_order']['total'])} "
              f"({top(saga['redis_commands_per_order'])})."]
    where = saga.get("where_time_goes_ms")
    if where:
        lines += ["", "Where an unloaded order's time goes (medians, ms): " + "; ".join(
            f"{k} {_f(v)}" for k, v in where.items()) + "."]
    targets = result["targets"]
    lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if ok else 'NOT met'}"
                                           for k, ok in targets.items()) + "."]
    return "\n".join(lines)


BROKER_NAMES = {"redis": "Redis", "sentinel": "Redis behind Sentinel",
                "rabbitmq": "RabbitMQ (quorum queues, confirms)"}
OPS_UNIT = {"redis_commands": "Redis commands",
            "amqp_packets": "AMQP packets, both ways (rabbitmqctl's recv_cnt + send_cnt)"}


def broker_table(result: dict[str, Any]) -> list[str]:
    """The saga on each broker the run was asked for (--broker), a column each."""
    brokers = result.get("brokers") or {}
    if len(brokers) < 2:
        return []
    kinds = list(brokers)
    ran = {k: f for k, f in brokers.items() if "orders_per_s" in f}

    def cells(cell: Callable[[dict[str, Any]], str]) -> str:
        return " | ".join(cell(ran[k]) if k in ran else "–" for k in kinds)

    def broker_cpu(f: dict[str, Any]) -> str:
        cpu = f["cpu_ms_per_order"]
        return _f(cpu.get("broker", cpu.get("redis")))

    lines = ["", "The saga on each broker (its burst, unloaded latency, CPU and the broker's "
                 "operations per order; the Redis column is the run above):", "",
             "| the saga on | " + " | ".join(BROKER_NAMES[k] for k in kinds) + " |",
             "|---|" + "---:|" * len(kinds),
             "| orders/s, burst | " + cells(lambda f: _f(f["orders_per_s"])) + " |",
             "| POST → confirmed p50 / p99, one at a time (ms) | "
             + cells(lambda f: f"{_f(f['latency_ms']['p50'])} / {_f(f['latency_ms']['p99'])}")
             + " |",
             "| CPU per order, every process (ms) | "
             + cells(lambda f: _f(f["cpu_ms_per_order"]["total"])) + " |",
             "| of which the broker's (ms) | " + cells(broker_cpu) + " |",
             "| broker operations per order | "
             + cells(lambda f: f"{_f(f['broker_ops_per_order']['total'])} "
                               f"{OPS_UNIT.get(f.get('broker_ops_unit', ''), '')}") + " |"]
    skipped = [f"{BROKER_NAMES[k]}: {f['skipped']}" for k, f in brokers.items() if "skipped" in f]
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    return lines


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
    others = contenders(result)
    panels = 2 + bool(scaling) + bool(memory)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    series = [("bare chain, one at a time", result["bare"]["samples_ms"]),
              *((f"{label}, one at a time", f["samples_ms"]) for label, f in others),
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
    cost(axes[0][1], result, others)
    column = 2
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
    versus = result.get("ratios", {}).get("throughput_vs_handrolled")
    fig.suptitle(f"Order saga vs a hand-rolled chain and bare Celery: {m['cpu_count']} cores, "
                 f"{result['settings']['database']}, throughput ratio "
                 + (f"{versus:.2f} to the hand-rolled chain, " if versus is not None else "")
                 + f"{result['throughput_ratio']:.2f} to the bare chain", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost(ax: Any, result: dict[str, Any], others: list[tuple[str, dict[str, Any]]]) -> None:
    """Orders (or chains) per second as bars, each labelled with its CPU per item."""
    bare, saga = result["bare"], result["saga"]
    bars = [("bare chain", bare["chains_per_s"], bare["cpu_ms_per_chain"]["total"]),
            *((label, f["orders_per_s"], f["cpu_ms_per_order"]["total"]) for label, f in others),
            ("order saga", saga["orders_per_s"], saga["cpu_ms_per_order"]["total"])]
    names = [name for name, _, _ in bars]
    rates = [rate or 0.0 for _, rate, _ in bars]
    drawn = ax.barh(names, rates, color=["grey", *(["tab:blue"] * len(others)), "tab:orange"])
    for bar, (_, rate, cpu_ms) in zip(drawn, bars, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f" {_f(rate)}/s, {_f(cpu_ms)} ms CPU each", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(rates) * 1.6 if max(rates) > 0 else 1)
    ax.set_xlabel("burst throughput (orders or chains per s)")
    ax.set_title("Throughput, and CPU per item (every process)")
    ax.grid(True, axis="x", alpha=0.3)


def ratio_of(a: float, b: float) -> float:
    return a / b if b else float("nan")


def markdown(result: dict[str, Any]) -> str:
    return f"Machine: {machine_line(result)}.\n\n{table(result)}"


def _runs(figures: dict[str, Any], items: str) -> str:
    """The two bursts a baseline's throughput is the mean of, when there were two."""
    runs = figures.get(f"{items}_per_s_runs")
    return f"; mean of {_f(runs[0])} before and {_f(runs[1])} after the saga" if runs else ""


if __name__ == "__main__":
    saved = Path(sys.argv[1] if len(sys.argv) > 1 else "var/bench/latest.json")
    print(markdown(json.loads(saved.read_text())))

