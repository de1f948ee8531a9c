"""CPU time (user + system) that each process of the system used over a stretch of work. The
drivers take it themselves, over exactly the window the throughput is measured on (the saga's
GETs that follow are left out), and count their own as "client"."""
import resource
from collections.abc import Mapping

import psutil
import redis


def watch_option(pids: Mapping[str, int | None]) -> str:
    return ",".join(f"{name}={pid}" for name, pid in pids.items() if pid is not None)


def parse_watch(text: str) -> dict[str, int]:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {name: int(pid) for name, pid in pairs}


def snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    seconds = {}
    for name, pid in pids.items():
        try:
            process = psutil.Process(pid)
            # a prefork worker's tasks run in its pool children
            family = [process, *process.children(recursive=True)]
            seconds[name] = sum(_cpu(p) for p in family)
        except psutil.Error:
            continue
    own = resource.getrusage(resource.RUSAGE_SELF)
    seconds["client"] = own.ru_utime + own.ru_stime
    return seconds


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:  # a child gone meanwhile
        return 0.0
    return times.user + times.system


def used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 4) for name in after if name in before}


def per_item_ms(seconds: Mapping[str, float], items: int) -> dict[str, float]:
    ms = {name: round(s * 1000 / max(1, items), 2) for name, s in seconds.items()}
    ms["total"] = round(sum(seconds.values()) * 1000 / max(1, items), 2)
    return ms


def redis_calls(client: "redis.Redis[bytes]") -> dict[str, int]:
    """Commands the Redis server has run so far, by command (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

