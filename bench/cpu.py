"""CPU time (user + system) that each process of the system used over a stretch of work. The
drivers take it themselves, over exactly the window the throughput is measured on (the saga's
GETs that follow are left out), and count their own as "client"."""
import os
import resource
from collections.abc import Mapping
from typing import Any, cast

import psutil
import redis


def watch_option(pids: Mapping[str, int | None]) -> str:
    return ",".join(f"{name}={pid}" for name, pid in pids.items() if pid is not None)


def parse_watch(text: str) -> dict[str, int]:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {name: int(pid) for name, pid in pairs}


def snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    others = {*pids.values(), os.getpid()}
    for name, pid in pids.items():
        try:
            seconds[name] = sum(_cpu(p) for p in _family(psutil.Process(pid), others))
        except psutil.Error:
            continue
    own = resource.getrusage(resource.RUSAGE_SELF)
    seconds["client"] = own.ru_utime + own.ru_stime
    return seconds


def _family(process: psutil.Process, others: set[int]) -> list[psutil.Process]:
    """The process and the children that work for it (a prefork worker's pool), not those
    counted on their own: the bench's own process is the parent of everything it started."""
    family = [process]
    for child in process.children():
        if child.pid not in others and _name(child) != "py-spy":  # py-spy: the profiler's
            family += _family(child, others)
    return family


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""


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


def redis_calls(client: redis.Redis) -> dict[str, int]:
    """Commands the Redis server has run so far, by command (INFO commandstats)."""
    # redis-py types a command's reply as "the reply or an Awaitable of it"; this client is sync
    stats = cast(dict[str, dict[str, Any]], client.info("commandstats"))
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

