"""What a run reports: the table on stdout, the JSON file, and the README's performance section.

A missed goal gets a one-line note in the README saying why and what would fix it. The notes
come from cProfile runs of the missed benchmark; a miss without a note is named on stderr.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sqlite3
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.measure import Result, progress

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
HEADING = "## Performance"
COLUMNS = ("benchmark", "engine", "median", "p99", "baseline", "ratio", "goal", "result", "load")

# Why a goal is missed and what would fix it, read off profiles (cProfile, py-spy) of each
# benchmark and timings of the alternatives, on this machine kind.
MISS_NOTES: dict[tuple[str, str], str] = {
    **dict.fromkeys(
        [("8 processes placing", "postgres"), ("8 processes placing (client CPU)", "postgres")],
        "neither the rate nor the client CPU holds. At 1,000,000 specimens, measured again "
        "once the audit chain's lock and tail went through the driver's cursor (load average "
        "3.5 with the 8 processes running, service and raw driver taking turns over two "
        "rounds): 341/s against 735/s, client CPU 3.9 ms a placement against the raw "
        "driver's 0.90 ms (4.4×), the server's 1.36 against 0.98 ms. In the full run, before "
        "that change: 350/s against 929/s, 3.9 ms against 0.74 ms (5.3×), the server's 1.39 "
        "against 0.85 ms: the client's own CPU did not move beyond the noise, the raw "
        "driver's moved with the load. The rate is bound by CPU: "
        "the 8 processes and the server share 2 cores (no retries, no double booking), and "
        "where each terminal is a computer of its own what bounds it is the server's CPU a "
        "placement, within 1.7× the raw driver's. Cut over time: every statement an accession "
        "runs is built once (building one cost more than running it), the tube and its first "
        "custody event are written by one INSERT each instead of two ORM flushes, a box's "
        "taken positions, the audit entry and the chain's lock and tail go through the "
        "driver's cursor, the free count by a Core UPDATE, and the pool asks a connection's "
        "socket rather than pinging the server. Left, per accession in one process: the "
        "participant, study and visits, the destination and the box with room loaded as ORM "
        "objects (about a third of the CPU), the tube's INSERT through SQLAlchemy, the serial, "
        "the consent check, the Specimen and event objects and the read model returned. What "
        "would make it hold: the accession's reads as Core rows and its read model built from "
        "them, a second path beside the ORM's that every accession would have to keep in "
        "step; or terminals on computers of their own, or at least 5 cores.",
    ),
    ("CLI: scan ID (CPU)", "sqlite"): (
        "0.99 s of CPU against 0.23 s for `import sqlalchemy` in the full run (4.3×; 0.75 s "
        "against 0.20 s, 3.8×, measured alone on a quieter machine; 3.4× on the machine of the "
        "run before). The scan itself (sign-in check, lookup, output) takes about 0.06 s and "
        "the interpreter, Typer and the settings 0.07 s; the rest is importing the database "
        "layer, which no command imports before it runs (help costs 0.1–0.17 s). In a bare "
        "interpreter `biobank.models` costs about 0.14 s on top of SQLAlchemy and SQLModel "
        "(the table classes' declarative mapping; their validators are built when first "
        "used) and SQLAlchemy with SQLModel another 0.15 s, so importing the models alone "
        "costs more than the goal allows. What would make it hold: a scan's lookup on Core "
        "tables that import neither SQLModel nor the table classes, which would be a second "
        "resolver beside the one every front end shares, or a resident process the command "
        "asks; neither is worth its cost for a command a script runs, where `biobank scan` "
        "of many IDs in one process (or the workstation) is the tool."
    ),
    **dict.fromkeys(
        [("TUI: scan → specimen detail", "postgres"), ("TUI: scan → box grid", "postgres")],
        "the median holds (23 and 17 ms), the p99 does not: 139 and 127 ms over 200 views "
        "and 100 grids at 1,000,000 specimens (load average 1.1), while tube after tube holds "
        "(21 ms). The slowest views' phases (in the JSON) show stalls of 110–135 ms that fall "
        "in any phase: in the database work (a view with 126 ms until its data against the "
        "usual 5–15 ms) as often as after the data was on the screen, in layout and paint "
        "(133 ms after data that came in 15 ms), with the collector's passes no more than in "
        "a quick view's; the same views on SQLite in the same run hold (36 and 25 ms), and on "
        "PostgreSQL run alone on a freshly built inventory on the same machine the same day "
        "(`--only tui`) they held too (p99 38 and 27 ms, slowest 38 and 31 ms), as they did "
        "run alone at 20,000 (p99 33 and 34 ms); in the full run at 100,000 the same stalls "
        "came after the data (p99 105 and 86 ms). So the "
        "stalls are not the views' own work but something the earlier benchmarks leave "
        "running on the 2 cores (the server's autovacuum of the tables the imports, "
        "accessions and pull list wrote is the likely one; not confirmed). Next: log the "
        "server's autovacuum during the views, or run them after `VACUUM ANALYZE`, to tell.",
    ),
}


def machine(*, size: int, seed: int, quick: bool, versions: dict[str, str]) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": size,
        "seed": seed,
        "quick": quick,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_at_end": os.getloadavg(),  # the machine may be shared: other work skews figures
        **versions,
    }


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def _ram_gb() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 1024**2, 1) if match else None


def write_json(path: Path, info: dict[str, Any], results: list[Result]) -> None:
    document = {"machine": info, "results": [r.to_json() for r in results]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> tuple[dict[str, Any], list[Result]]:
    document = json.loads(path.read_text())
    results = [Result(**{k: v for k, v in r.items() if k != "ratio"}) for r in document["results"]]
    return document["machine"], results


def _latency(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:,.0f} µs"
    return f"{seconds * 1000:,.1f} ms"


def _figure(result: Result, value: float | None) -> str:
    if value is None:
        return "–"
    if result.kind == "memory":
        return f"{value:,.1f} MB"
    return _latency(value) if result.kind == "latency" else f"{value:,.0f}/s"


RERUN = "rerun"  # a result's details: the day it was measured again alone
RERUN_MARK = " †"


def rerun(results: list[Result], reruns: list[Run]) -> list[Result]:
    """A run's results, each measured again alone later (after a change that bears on it:
    `--only`, or a benchmark module's `--json`) in the place of the earlier figure, its
    details saying when."""
    merged = {(r.benchmark, r.engine): r for r in results}
    for info, later in reruns:
        for result in later:
            result.details[RERUN] = info["date"][:10]
            merged[result.benchmark, result.engine] = result
    return list(merged.values())


def _verdict(result: Result) -> str:
    return {True: "pass", False: "MISS", None: "–"}[result.passed]


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    return [
        (
            r.benchmark + (RERUN_MARK if RERUN in r.details else ""),
            r.engine,
            _figure(r, r.median),
            _latency(r.p99) if r.p99 is not None else "–",
            _figure(r, r.baseline),
            f"{r.ratio:.2f}×" if r.ratio is not None else "–",
            r.goal or "–",
            _verdict(r),
            _load(r),
        )
        for r in results
    ]


def _load(result: Result) -> str:
    """The machine's one-minute load average as the figure was taken (the median of its
    rounds' where each round recorded its own; none recorded: –)."""
    load = result.details.get("load_average")
    if isinstance(load, list) and load:
        load = statistics.median(load)
    return f"{load:.1f}" if isinstance(load, int | float) else "–"


def table(results: list[Result]) -> str:
    lines = [COLUMNS, *rows(results)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(_padded(line, widths) for line in lines)


def _padded(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


# Measured on their own small database or none: the inventory's size does not bear on them.
SIZE_INDEPENDENT = {
    "TUI: cold start to sign-in",
    "CLI: scan ID (CPU)",
    "CLI: --help (CPU)",
    "CLI: group --help (CPU)",
}
GROWTH_COLUMNS = ("benchmark", "engine", "smaller", "larger", "cost per 10×", "10M (projected)")
Run = tuple[dict[str, Any], list[Result]]


def growth_rows(smaller: Run, larger: Run) -> list[tuple[str, ...]]:
    """How each figure changes from the smaller inventory to the larger: the cost of one item
    (a time, the inverse of a rate, a memory peak) per ten times more specimens, and the
    figure that rate of growth projects for 10,000,000."""
    (small_info, small_results), (large_info, large_results) = smaller, larger
    decades = math.log10(large_info["size"] / small_info["size"])
    before = {(r.benchmark, r.engine): r for r in small_results}
    found = []
    for r in large_results:
        earlier = before.get((r.benchmark, r.engine))
        if earlier is None or r.engine == "none" or r.benchmark in SIZE_INDEPENDENT:
            continue
        if RERUN in r.details:  # measured after a change the smaller run came before
            continue
        if not (earlier.median > 0 and r.median > 0) or decades <= 0:
            continue
        cost = (r.median / earlier.median) ** (1 if r.kind != "throughput" else -1)
        per_decade = cost ** (1 / decades)
        ahead = math.log10(10_000_000 / large_info["size"])
        projected = r.median * per_decade ** (ahead if r.kind != "throughput" else -ahead)
        found.append((
            r.benchmark, r.engine, _figure(earlier, earlier.median), _figure(r, r.median),
            f"{per_decade:.2f}×", _figure(r, projected),
        ))  # fmt: skip
    return found


def growth_table(smaller: Run, larger: Run) -> str:
    header = _growth_header(smaller, larger)
    lines = [header, *growth_rows(smaller, larger)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(_padded(line, widths) for line in lines)


def _growth_header(smaller: Run, larger: Run) -> tuple[str, ...]:
    return (
        *GROWTH_COLUMNS[:2],
        f"at {smaller[0]['size']:,}",
        f"at {larger[0]['size']:,}",
        *GROWTH_COLUMNS[4:],
    )


def missing_notes(results: list[Result]) -> list[Result]:
    return [r for r in results if r.passed is False and (r.benchmark, r.engine) not in MISS_NOTES]


def readme_section(info: dict[str, Any], results: list[Result], smaller: Run | None = None) -> str:
    engines = [f"SQLite {info['sqlite']}"]
    if info.get("postgres"):
        engines.append(f"PostgreSQL {info['postgres']}")
    lines = [
        START,
        f"Measured {info['date'][:10]} with `python -m benchmarks"
        f"{' --quick' if info['quick'] else ''}` at {info['size']:,} specimens on "
        f"{info['cpu']} ({info['cores']} cores, {info['ram_gb']} GB RAM, load average "
        f"{info['load_at_start'][0]:.1f} at the start and {info['load_at_end'][0]:.1f} at the "
        f"end), Python {info['python']}, {', '.join(engines)}. Each service figure stands "
        "beside a raw-driver baseline measured in the same run on the same database; the ratio "
        "is service over baseline (times slower for a time, share of it for a rate, …/s, where "
        "p99 is the time of one placement, times as much for a memory peak, MB above what the "
        "process held before); load is the machine's one-minute load average as the figure "
        "was taken (2 cores: above 2, other work was waiting for them). What each benchmark "
        "times is in `benchmarks/` and in the JSON a run writes (`--json`).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in rows(results)),
    ]
    again = sorted({r.details[RERUN] for r in results if RERUN in r.details})
    if again:
        lines += [
            "",
            f"{RERUN_MARK.strip()} Measured again on {', '.join(again)}, after a change that bears "
            "on it, alone (`python -m benchmarks --only …`, or a benchmark module's own `--json`) "
            "on the same machine at the size this run gives it: its figure takes the earlier "
            "one's place.",
        ]
    if smaller is not None:
        header = _growth_header(smaller, (info, results))
        lines += [
            "",
            f"How the figures grow from {smaller[0]['size']:,} to {info['size']:,} specimens "
            f"(the smaller run: {smaller[0]['date'][:10]}, same machine kind and seed): the cost "
            "of one item — a time, the inverse of a rate, a memory peak — per ten times more "
            "specimens, and what that growth projects for 10,000,000. A memory peak that stays "
            "flat shows as 1.00×."
            + (
                " Figures measured again (†) are left out: the smaller run came before the change."
                if again
                else ""
            ),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in growth_rows(smaller, (info, results))),
        ]
    misses = [r for r in results if r.passed is False]
    if misses:
        lines += ["", "Why the misses miss, from profiles, and what would fix them:", ""]
        shared: dict[str, list[str]] = {}  # a note once, naming every miss it explains
        for r in misses:
            note = MISS_NOTES.get((r.benchmark, r.engine), "not profiled yet.")
            shared.setdefault(note, []).append(f"{r.benchmark}, {r.engine}")
        lines += [f"- {'; '.join(names)}: {note}" for note, names in shared.items()]
    lines.append(END)
    return "\n".join(lines)


def write_readme(
    path: Path, info: dict[str, Any], results: list[Result], smaller: Run | None = None
) -> None:
    """Replace the text between the markers (added under a Performance heading at the end
    when absent); nothing else in the README changes."""
    text = path.read_text()
    section = readme_section(info, results, smaller)
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{section}\n"
    path.write_text(text)
    progress(f"wrote the performance section of {path}")
