"""Timing and the result of one benchmark on one engine."""

from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


@dataclass
class Result:
    """`median` and `baseline` are seconds for a latency, items per second for a throughput
    and megabytes for a memory peak; `p99` is always a latency in seconds (None when there is
    only one run)."""

    benchmark: str
    engine: str
    kind: Literal["latency", "throughput", "memory"]
    median: float
    p99: float | None
    baseline: float | None
    goal: str | None
    passed: bool | None
    how: str = ""  # what exactly was timed
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Service over baseline: times slower for a latency, share of it for a throughput,
        times as much for a memory peak."""
        return self.median / self.baseline if self.baseline else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def memory_result(
    benchmark: str,
    engine: str,
    peak: float,
    *,
    baseline: float | None,
    goal_mb: float,
    how: str,
    details: dict[str, Any],
) -> Result:
    """A peak of resident memory (MB above what the process held before) against its goal."""
    return Result(
        benchmark=benchmark, engine=engine, kind="memory", median=peak, p99=None,
        baseline=baseline, goal=f"≤ {goal_mb:g} MB", passed=peak <= goal_mb, how=how,
        details=details,
    )  # fmt: skip


def share_result(
    benchmark: str,
    engine: str,
    rate: float,
    *,
    baseline: float,
    goal_share: float,
    how: str,
    details: dict[str, Any],
) -> Result:
    """A throughput (items per second) against the raw driver's, its goal a share of that."""
    goal = f"≥ {goal_share:g}× raw"
    passed = rate >= goal_share * baseline
    return Result(benchmark, engine, "throughput", rate, None, baseline, goal, passed, how, details)


def import_shares(
    benchmark: str,
    engine: str,
    items: int,
    rounds: list[dict[str, Any]],
    *,
    goal_share: float,
    how: str,
    details: dict[str, Any],
) -> list[Result]:
    """An import's rate against its baseline's, checking and writing and writing alone, each
    from the round whose ratio is the median, with every round's ratio. A round holds the
    import's "check_seconds" and "write_seconds" and its baseline's "seconds"."""
    found = []
    for part, checking in (("check + write", True), ("write only", False)):
        seconds = [
            r["import"]["write_seconds"] + (r["import"]["check_seconds"] if checking else 0.0)
            for r in rounds
        ]
        ratios = [r["baseline"]["seconds"] / s for r, s in zip(rounds, seconds, strict=True)]
        middle = sorted(range(len(rounds)), key=ratios.__getitem__)[len(rounds) // 2]
        found.append(
            share_result(
                f"{benchmark} ({part})",
                engine,
                items / seconds[middle],
                baseline=items / rounds[middle]["baseline"]["seconds"],
                goal_share=goal_share,
                how=how,
                details=details
                | {"round_ratios": [round(r, 3) for r in ratios], "median_round": middle + 1},
            )
        )
    return found


def interleaved(rounds: int, first: str, second: str) -> Iterator[tuple[str, str]]:
    """The order of each round's two runs, each round starting with the other than the last,
    so the machine's load, rising or falling, weighs on both alike."""
    for n in range(rounds):
        yield (first, second) if n % 2 == 0 else (second, first)


def timed_in_turns(
    actions: dict[str, Callable[[T], object]], items: Iterable[T], *, warmup: int = 0
) -> dict[str, list[float]]:
    """Seconds each action took on each item, the actions taking turns item by item (each
    item starting with the next one), so the machine's load weighs on all of them alike; the
    first `warmup` items are run but not counted."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    order = list(actions.items())
    for n, item in enumerate(items):
        turn = order[n % len(order) :] + order[: n % len(order)]
        for name, action in turn:
            start = time.perf_counter()
            action(item)
            if n >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def rss_mb() -> float:
    """Resident now (the peak so far may be higher: imports come and go)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1024**2


def peak_mb() -> float:
    """The most this process has held since it started its program: VmHWM, not ru_maxrss,
    which Linux carries over from the parent a child was forked from (a benchmark's children
    would all report the size of the process that built the inventory)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(times: list[float]) -> float:
    return statistics.median(times)


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """A line on stderr, with the seconds since the run began (where the time goes)."""
    print(f"{time.perf_counter() - _STARTED:7.1f}s {message}", file=sys.stderr, flush=True)
