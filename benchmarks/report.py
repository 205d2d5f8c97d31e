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
        "once the pool no longer pinged each connection it hands out (load average 3.0 with "
        "the 8 processes running): 262/s against 626/s, client CPU 5.2 ms a placement against "
        "the raw driver's 1.2 ms (4.4×). Before, at a load average of 2.7: 215/s against "
        "654/s, client CPU 6.9 ms against 1.2 ms (5.8×), the server's 2.1 against 1.2 ms. "
        "Measured "
        "earlier at 200,000 specimens while other "
        "work loaded the 2 cores (load average 8–13), before and after the accession path was "
        "cut, alternating: client CPU per placement fell from 16.9 ms to 11.9–12.6 ms against "
        "the raw driver's 2.3–2.8 ms (6.3× to 4.4–5.1×); one process alone spends about 8 ms "
        "against 1.7 ms. The rate (27–31/s against 98–111/s, 219/s against 788/s at 1,000,000 "
        "on a quieter machine) is bound by CPU: the 8 processes and the server share 2 cores "
        "(no retries, no double booking); the server spends about 4 ms a placement against "
        "the raw driver's 2.5. Cut: every statement an accession runs is built once "
        "(building one cost more than running it), the tube and its first custody event are "
        "written by one INSERT each instead of two ORM flushes, a box's taken positions and "
        "the audit entry go through the driver's cursor, the free count by a Core UPDATE. "
        "Left, per accession in one process (ms of CPU on the loaded machine): the "
        "participant, study and visits loaded as ORM objects, with the connection's "
        "checkout, then a ping, and BEGIN, 1.7; the audit seal (advisory lock, tail, "
        "insert) 1.2–1.5; "
        "the destination and the box with room, both ORM objects, 1.2–1.7; the tube's INSERT "
        "through SQLAlchemy 0.6–0.8; the serial 0.4–0.5; the consent check 0.3–0.4; the "
        "commit 0.4; the Specimen and event objects 0.6. Next: the seal's lock and tail read "
        "on the driver's cursor, the destination and participant read as Core rows; what "
        "makes the rate hold is terminals on computers of their own, or at least 5 cores.",
    ),
    ("CLI: scan ID (CPU)", "sqlite"): (
        "0.78 s of CPU against 0.23 s for `import sqlalchemy` at 1,000,000 (3.4×; 0.65 s "
        "against 0.19 s before). The scan itself "
        "(sign-in check, lookup, output) takes about 0.06 s and the interpreter, Typer and the "
        "settings 0.07 s; the rest is importing the database layer, which no command module "
        "imports any more before it runs (help costs 0.1–0.15 s). In a bare interpreter "
        "`biobank.models` costs 0.36 s: SQLAlchemy 0.14 s, its ORM and SQLModel 0.11 s, and "
        "the SQLModel table classes 0.13 s (pydantic builds each one's validator at import); "
        "`biobank.services.scan` adds 0.05 s (the consent, pull-list, custody and storage "
        "services behind the views a scan opens) and `biobank.bootstrap` 0.045 s (the "
        "first-run services: one-time codes with argon2, reference data, users), imported by "
        "every command that opens the database. What would make it hold: a scan's lookup on "
        "SQLAlchemy Core tables, importing neither SQLModel nor the table classes, the view "
        "services imported when a view is asked for, and the first-run services only on a "
        "first run."
    ),
    **dict.fromkeys(
        [("REDCap import (check + write)", "sqlite"), ("REDCap import (write only)", "sqlite")],
        "1,178/s against 2,933/s for the raw driver's executemany of the same rows (0.40×; "
        "writing alone 0.51×) at 20,000 records-events at a load average of 3 on 2 cores; "
        "0.42–0.46× (writing alone 0.58–0.59×) in two runs at 7–8, the round ratios 0.26–0.58 "
        "as the load moves. The heap the import starts with is frozen while it checks and "
        "while it writes (`imports.heap`: the collector walked the whole process some 35 times "
        "an import), participants and planned visits pickle as tuples, each field's cells are "
        "taken in one call, and values are written without loading their participants and "
        "visits as ORM rows: the import's CPU fell from 4.6–6.4 s to 3.7–4.2 s checking and "
        "from 15–17 s to 12–13 s writing 20,000 records-events. What is left is Python per "
        "value, some 60% of the write's time (the rest the driver's): the audit entry (the "
        "row's canonical JSON and the chain's hash), the value row and its `after`, the "
        "scratch file's participants and visits read and written back a batch at a time; and "
        "the reading of each row's cells. Next: a value's row and audit entry built in one "
        "pass, their JSON from a template of the constant fields.",
    ),
    **dict.fromkeys(
        [("REDCap import peak memory", "sqlite"), ("REDCap import peak memory", "postgres")],
        "at the quick sizes (2,000 and 200 records-events) the process's fixed caches (the "
        "dictionary, the readers, the driver's) dominate both peaks; at 100,000 against 10,000 "
        "the peak is 1.08× (68.9 against 63.9 MB on SQLite, 31.7 against 29.3 MB on "
        "PostgreSQL): flat in the number of records; 1.07× and 1.08× in the run at "
        "1,000,000. At 10,000 against 1,000 records-events (the run at 100,000 specimens) "
        "SQLite's peak is 1.9× (63 against 33 MB): the import's page cache, 32 MB at most "
        "(`db.BULK_CACHE_KIB`), fills at the larger only.",
    ),
    **dict.fromkeys(
        [
            ("legacy import (check + write)", "sqlite"),
            ("legacy import (check + write)", "postgres"),
        ],
        "at 1,000,000 specimens (100,000 rows, load average 1.4–2.7) 0.48× on PostgreSQL "
        "(writing alone 0.60×; round ratios 0.46–0.51), 0.58× on SQLite: checking took "
        "3.6–4.2 s and writing 14.5–16.3 s against COPY's 8.7–9.4 s. Earlier: "
        "0.42× (SQLite) and 0.45× (PostgreSQL) at 10,000 rows under a load average of about 6, "
        "since the baseline became fair: the raw driver writes exactly the rows the import "
        "wrote, by COPY on PostgreSQL, into a copy made as the import's is, the two alternating "
        "round by round (earlier figures, against executemany into a cold copy, flattered the "
        "import up to 1.8×). Writing alone is 0.55×; the checking of each row is what is left. "
        "Measured alone at 100,000 specimens (30,000 rows), 0.42× both before and after an "
        "import's connection stopped preparing statements (which took the REDCap import from "
        "0.44× to 0.55×): the server's log puts the import's COPYs at 2.1 s against the "
        "baseline's 1.9 s, so what is left is the client's CPU, checking 1.0 s and building "
        "the rows and their audit entries about 1.2 s of the 3.3 s of writing, while the "
        "server waits.",
    ),
    **dict.fromkeys(
        [
            ("TUI: cold start to a scan-ready home", "sqlite"),
            ("TUI: cold start to a scan-ready home", "postgres"),
        ],
        "1.07 s (SQLite) and 1.16 s (PostgreSQL) at 1,000,000 specimens, measured again once "
        "the workstation painted a changed screen within a few milliseconds rather than at the "
        "next of Textual's 60 ticks a second (load average 1.1–1.5): the sign-in screen at "
        "0.33–0.37 s, the database open at 0.79–0.90 s, the home screen at 0.94–1.07 s; "
        "1.12–1.24 s of the process's CPU, so what is left is work, not waiting. Before, at a "
        "load average of about 1: 1.40 s and 1.59 s (the sign-in screen at 0.4–0.6 s, the "
        "database open at 0.9–1.3 s, the home screen at 1.2–1.6 s). Earlier, "
        "1.9 s (SQLite) and 2.2 s (PostgreSQL) at 1,000,000 specimens under a load average of "
        "2 (5–7 s at 8–11), and about 2.4 s of the process's CPU at 100,000 and 1,000,000 "
        "alike: the inventory's size adds only the home screen's counts (0.06 s on SQLite; "
        "0.3 s on PostgreSQL just after a restore, before autovacuum has analyzed the tables). "
        "The rest is the start itself: the sign-in screen at 0.6 s, then the database layer "
        "imported behind it, 0.8 s (SQLAlchemy, SQLModel and the table classes; "
        "`biobank.bootstrap` alone 0.58 s on a quiet machine), then the sign-in, 0.35 s (the "
        "Argon2id PIN check). At a bench the database opens while the PIN is typed, which the "
        "benchmark does not wait for. What would make it hold: the lighter imports the CLI's "
        "note names (a scan's lookup on SQLAlchemy Core tables, the view and first-run services "
        "imported when first needed).",
    ),
    **dict.fromkeys(
        [("TUI: scan → specimen detail", "postgres"), ("TUI: scan → box grid", "postgres")],
        "the median holds (30 and 23 ms), the p99 does not: 96 and 109 ms at 1,000,000 "
        "specimens (load average 1.1), over 50 views and 20 box grids, so the p99 is the "
        "slowest one. Found by timing each view's phases at 100,000 (scan to worker, "
        "database, back to the UI, routing, paint): the database work takes 5–14 ms; the "
        "slow views waited for Textual to paint, which it does at the next tick of a timer at "
        "60 a second, two or three ticks a view. The workstation now paints at 240 a second "
        "(`tui.app.PAINT_PERIOD`): at 100,000 the p99 fell from 64 to 36 ms on PostgreSQL, "
        "and at 1,000,000 every view on SQLite now holds (44, 24 and 27 ms; they were 59 and "
        "56 ms) as does PostgreSQL's pull list (24 ms; it was 169). What is left, a slow view "
        "in 50 on PostgreSQL at 1,000,000, is not traced yet. Next: the same phase timings "
        "at 1,000,000 on PostgreSQL.",
    ),
    **dict.fromkeys(
        [("linked export to FHIR NDJSON", "sqlite"), ("linked export to FHIR NDJSON", "postgres")],
        "0.49–0.73× the CSV export's rate in six runs at 20,000 and 100,000 specimens under a "
        "load average of 6–12 (five at 0.5× or more); by the process's CPU, which the load "
        "moves less, 0.55–0.62× (4.9 s against 3.0 s for 30,477 specimens). Both share the "
        "selection and de-identification of the rows (about 3 s); FHIR adds the participants' "
        "records read beside them (`fhir_records`: values, consent, about 1.8 s) and a "
        "resource per value, each encoded by orjson. Next: the records' values and consent "
        "read on the driver's cursor rather than through SQLAlchemy's result layer.",
    ),
    **dict.fromkeys(
        [("restore (whole database)", "sqlite"), ("restore (whole database)", "postgres")],
        "at 1,000,000 specimens on a quiet machine (load average 1–3) a restore took 37 s on "
        "SQLite (the online backup API alone: 24 s) and 71 s on PostgreSQL (pg_restore alone: "
        "54 s); under a load average of 8–11 from other work on the 2 cores, 120 s and 139 s "
        "(baselines 49 s and 88 s). What it adds to the baseline: on SQLite, the private copy "
        "hashed as it is read (18 s loaded) and the quick check (12 s loaded); on PostgreSQL, "
        "the audit trail restored into a scratch database and checked, while the live restore "
        "runs, so the two share the cores. Safety, not speed, sets what is left.",
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
