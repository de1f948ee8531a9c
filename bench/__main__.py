"""`make bench` / `python -m bench`: the order saga against a hand-rolled Celery chain, Celery's
floor (a bare chain) and, with --peers, DBOS, in one run."""
import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.report import draw, markdown, profile_table, write_json
from bench.run import Bench

# None: sized from the warm-up's rate to last about --duration seconds
DEFAULTS = {"chains": None, "orders": None, "latency_samples": 200, "warmup": 50,
            "paced_seconds": 10.0, "scaling_workers": [1, 2, 4], "scaling_seconds": 5.0,
            "memory_orders": 10000, "memory_rounds": 5}
QUICK = {"chains": 200, "orders": 50, "latency_samples": 10, "warmup": 10, "paced_seconds": 1.5,
         "scaling_workers": [1, 2], "scaling_seconds": 1.0, "memory_orders": 20,
         "memory_rounds": 1}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="What does the saga's safety cost? Runs, in one process tree and one run on "
                    "its own redis-server: a bare Celery chain of three trivial tasks (Celery's "
                    "floor), the real system (API, saga worker, three services) with orders "
                    "through HTTP, and a hand-rolled chain of the same three effects behind the "
                    "same POST /orders (plain Celery, none of the saga's runtime); with --peers, "
                    "DBOS too; then payment scaled out at a 100 ms gateway, and the memory of "
                    "every process. Prints a table, writes DIR/latest.json and DIR/latest.png.")
    size = p.add_argument_group("size and duration")
    size.add_argument("--duration", type=float, default=15.0, metavar="S",
                      help="size each throughput burst to last about S seconds at the rate its "
                           "warm-up showed (default: %(default)g)")
    size.add_argument("--orders", type=int, metavar="N",
                      help="orders in each throughput burst (the saga's, the hand-rolled "
                           "chain's, DBOS's) (default: sized by --duration)")
    size.add_argument("--chains", type=int, metavar="N",
                      help="bare chains in the throughput burst (default: sized by --duration)")
    size.add_argument("--latency-samples", type=int, metavar="N",
                      help="orders, and chains, sent one at a time for the unloaded latency "
                           f"(default: {DEFAULTS['latency_samples']})")
    size.add_argument("--warmup", type=int, metavar="N",
                      help="orders, and chains, sent first and not measured "
                           f"(default: {DEFAULTS['warmup']})")
    size.add_argument("--concurrency", type=int, default=16, metavar="C",
                      help="concurrent HTTP clients posting the burst (default: %(default)s)")
    size.add_argument("--paced-fraction", type=float, default=0.7, metavar="F",
                      help="'under load' means orders posted at this fraction of the burst's "
                           "rate, open loop (default: %(default)g)")
    size.add_argument("--paced-seconds", type=float, metavar="S",
                      help=f"for this long (default: {DEFAULTS['paced_seconds']:g})")
    size.add_argument("--quick", action="store_true",
                      help="a small run that only shows the bench works (the smoke test's): "
                           + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                           + "; the hand-rolled chain's burst is not run again after the saga")
    system = p.add_argument_group("the system")
    system.add_argument("--postgres", metavar="URL",
                        help="run the services on PostgreSQL: a URL allowed to create databases "
                             "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres); the "
                             "bench creates saga_bench_* databases there and drops them at the end")
    system.add_argument("--peers", action="store_true",
                        help="measure DBOS too: the same three steps as one durable workflow "
                             "(SQLite system database, or PostgreSQL with --postgres), measured "
                             "like the saga; skipped, saying why, if DBOS cannot run")
    system.add_argument("--broker", type=_brokers, default=["redis"], metavar="redis,rabbitmq,...",
                        help="the brokers to run the saga on, comma-separated, each of the "
                             "bench's own: redis (the whole bench), sentinel (a master, a replica "
                             "and three sentinels), rabbitmq (a node of its own: rabbitmq-server, "
                             "as root); each other broker adds a phase with the saga's burst, "
                             "unloaded latency, CPU and broker operations per order, and a column "
                             "in the table per broker (default: redis)")
    system.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"],
                        help="every worker's pool, the saga's, the hand-rolled chain's and the "
                             "bare chain's alike (default: %(default)s)")
    system.add_argument("--worker-concurrency", type=int, default=8, metavar="N",
                        help="every worker's concurrency (default: %(default)s)")
    scaling = p.add_argument_group("scaling one service")
    scaling.add_argument("--skip-scaling", action="store_true", help="leave this phase out")
    scaling.add_argument("--scaling-workers", type=_counts, metavar="1,2,4",
                         help="payment worker counts to measure (default: 1,2,4)")
    scaling.add_argument("--gateway-latency-ms", type=int, default=100, metavar="MS",
                         help="the sandbox gateway's answer time in this phase "
                              "(default: %(default)s)")
    scaling.add_argument("--scaling-concurrency", type=int, default=1, metavar="N",
                         help="each payment worker's concurrency in this phase, so that payment is "
                              "the bottleneck being scaled (default: %(default)s)")
    scaling.add_argument("--scaling-seconds", type=float, metavar="S",
                         help="each point's burst is sized to last about this long "
                              f"(default: {DEFAULTS['scaling_seconds']:g})")
    memory = p.add_argument_group("memory")
    memory.add_argument("--skip-memory", action="store_true",
                        help="leave out the memory phase (RSS at idle and after the load is "
                             "still reported)")
    memory.add_argument("--memory-orders", type=int, metavar="N",
                        help="orders posted after the others, the API's RSS taken every "
                             "N/rounds; 10000 for the full check "
                             f"(default: {DEFAULTS['memory_orders']})")
    memory.add_argument("--memory-rounds", type=int, metavar="R",
                        help=f"(default: {DEFAULTS['memory_rounds']})")
    p.add_argument("--py-spy", nargs="?", const="py-spy", metavar="PROGRAM",
                   help="sample every saga process with py-spy during the burst; collapsed stacks "
                        "in DIR/profile/, a summary in latest.json and on the terminal")
    p.add_argument("--out", type=Path, default=Path("var/bench"), metavar="DIR",
                   help="where latest.json, latest.png and the work files go "
                        "(default: %(default)s)")
    return p


BROKERS = ("redis", "sentinel", "rabbitmq")


def _brokers(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(kinds) - set(BROKERS))
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"brokers are {', '.join(BROKERS)}; got {text!r}")
    return ["redis", *(k for k in BROKERS[1:] if k in kinds)]  # Redis's figures always come


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2,4, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected counts of at least 1, got {text!r}")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for key, default in DEFAULTS.items():  # what was not given: the quick or the full size
        if getattr(args, key) is None:
            setattr(args, key, QUICK.get(key, default) if args.quick else default)
    # SIGTERM takes the same path as Ctrl-C: every child is stopped on the way out
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        result = Bench(args).run()
    except KeyboardInterrupt:
        print("\nbench: interrupted; everything it started has been stopped", flush=True)
        return 130
    out = Path(args.out)
    write_json(result, out / "latest.json")
    draw(result, out / "latest.png")
    print(f"\n## Order saga vs a hand-rolled chain and bare Celery\n\n{markdown(result)}")
    if "profile" in result:
        print("\n" + profile_table(result["profile"]))
    print(f"\nwrote {out / 'latest.json'} and {out / 'latest.png'} ({result['took_s']:.0f} s)")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not cut short the stopping of what the first one unwinds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
