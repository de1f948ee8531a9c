"""`python -m devstack run`: the whole system in one terminal; what `make run` calls."""
import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from devstack.stack import PROCESSES, Stack

EXAMPLE_BODY = ('{"customer_email":"ada@example.com","items":[{"sku":"BOOK-1","quantity":2}],'
                '"payment_token":"tok_visa"}')


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Run the order saga locally: an embedded Redis and SMTP server (unless "
                    "BROKER_URL or REDIS_URL / SMTP_HOST are set), one SQLite file per "
                    "service under the var directory (unless the *_DATABASE_URL variables are "
                    "set), the API and every worker.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run", help="start everything and block until Ctrl-C",
        description="Start everything, print the API address and an example request, and run "
                    "until Ctrl-C or SIGTERM, which stop every process cleanly.")
    run.add_argument("--var-dir", type=Path, default=Path("var"),
                     help="databases, Redis data, mails and logs go here (default: %(default)s)")
    run.add_argument("--port", type=int, default=None,
                     help="API port (default: $API_PORT, else 8000)")
    run.add_argument("--scale", action="append", default=[], metavar="KIND=N",
                     help="run N processes of a worker kind "
                          f"({', '.join(k for k in PROCESSES if k != 'api')}); "
                          "repeatable, e.g. --scale inventory=2")
    run.add_argument("--metrics-port", type=int, default=9100,
                     help="each worker serves its metrics on the next free port from here "
                          "(default: %(default)s); the API's are at /metrics")
    run.add_argument("--ready-timeout", type=float, default=60,
                     help="seconds to wait for the API's /healthz (default: %(default)s)")
    run.set_defaults(run=run_command)
    return top


def run_command(args: argparse.Namespace) -> int:
    try:
        stack = Stack(args.var_dir, api_port=args.port, workers=_parse_scale(args.scale),
                      metrics_from=args.metrics_port)
    except ValueError as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 2
    say = stack.supervisor.say
    # SIGTERM (from `kill`, a container runtime, CI) takes the same clean path as Ctrl-C. SIGINT is
    # set explicitly too: a shell starts background jobs with it ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        stack.start()
        stack.wait_ready(args.ready_timeout)
        _print_welcome(stack, args.var_dir)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        say("stopping (Ctrl-C or SIGTERM received)")
        return _stop(stack, say, 0)
    except (RuntimeError, OSError) as error:  # a failed migration, a busy port, not ready in time
        say(f"could not start: {error}")
        return _stop(stack, say, 1)


def _stop(stack: Stack, say: Callable[[str], None], code: int) -> int:
    # A second Ctrl-C must not cut the shutdown short and leave orphans; stop() ends in SIGKILL
    # after its timeout anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stack.stop()
    say("stopped")
    return code


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_welcome(stack: Stack, var_dir: Path) -> None:
    say = stack.supervisor.say
    api = stack.api_url
    say(f"ready: API at {api}")
    say(f"       docs at {api}/docs")
    say(f"       pages at {api}/ui (orders, each one's timeline, dead letters)")
    if stack.maildir is not None:
        say(f"       mails land as .eml files in {_shown(stack.maildir, var_dir)}/")
    else:
        say(f"       mails go to {stack.env['SMTP_HOST']}:{stack.env.get('SMTP_PORT', '')}")
    say(f"       metrics at {api}/metrics, and each worker's: " + ", ".join(
        f"{name} {url}" for name, url in stack.metrics_urls.items()))
    say(f"       logs in {_shown(stack.var_dir / 'log', var_dir)}/; Ctrl-C stops everything")
    say("try:")
    # Bare, with no prefix, so it can be copied in one go.
    say(f"curl -s -X POST {api}/orders -H 'content-type: application/json' "
        f"-d '{EXAMPLE_BODY}'", None)


def _shown(path: Path, var_dir: Path) -> str:
    """The path as the user gave it (var/mail), not the resolved absolute one."""
    try:
        return str(var_dir / path.relative_to(Path(var_dir).resolve()))
    except ValueError:
        return str(path)


def _parse_scale(items: Sequence[str]) -> dict[str, int]:
    counts = {}
    for item in items:
        kind, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise ValueError(f"--scale expects KIND=N, got {item!r}")
        counts[kind] = int(count)
    return counts


if __name__ == "__main__":
    sys.exit(main())
