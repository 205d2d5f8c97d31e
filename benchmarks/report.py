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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.measure import Result, progress

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
HEADING = "## Performance"
COLUMNS = ("benchmark", "engine", "median", "p99", "baseline", "ratio", "goal", "result")

# Why a goal is missed and what would fix it, read off profiles (cProfile, py-spy) of each
# benchmark and timings of the alternatives, on this machine kind.
_SCREEN_PER_SCAN = (
    "the bottom line of keys is now one line of text (it was Textual's Footer, a widget per "
    "key: ~250 → 68-79 ms a view on this machine); what remains is mounting the specimen "
    "screen's widgets and styling them (~55-65 ms), the services take 2-12 ms. A specimen "
    "screen kept installed and shown again was tried and measured slower (showing it again "
    "restyles every widget). What would meet the goal: a view that updates its widgets in "
    "place from scan to scan, and the event history filled after the first paint."
)
_BOX_SCREEN = (
    "49-58 ms against 50 across engines and sizes: mounting the box screen (header, grid, "
    "side panel) now that the key bar is one line (it was ~200 ms with the Footer); "
    "`box_view` itself takes 4-10 ms. A grid refreshed in place from box to box would meet "
    "the goal with room."
)
_IMPORTS = (
    "823 ms in the 100,000 run and 1,165 ms in the 1,000,000 run the same day (the same demo "
    "database; the second right after building two large inventories on a 2-core machine). "
    "The schema check no longer imports Alembic, Mako and Pygments (~0.2-0.5 s): a database "
    "stamped with `migrations.HEAD` is current. What remains is imports: SQLModel, SQLAlchemy "
    "and Pydantic with the models ~0.55 s (building the SQLModel classes alone ~0.18 s) and "
    "Textual ~0.45 s; importing Textual's widgets only as screens need them would keep the "
    "goal under load."
)
_EXPORT = (
    "at 100,000 specimens (30,477 rows) this release took the export from 6,188 to ~9,000 "
    "rows/s on SQLite (0.31× → 0.42×) and from ~2,300 to ~6,900 on PostgreSQL (0.22× → "
    "0.35×): specimen details read with the cohort, one collection's values shared by its "
    "tubes, the keyed HMAC copied per code, a single file streamed without a spool, and on "
    "PostgreSQL sessions in UTC (time-zone lookups were ~10%) and one array parameter instead "
    "of IN lists of thousands (rendering and parsing them was ~9%). What remains is spread "
    "thin (py-spy, PostgreSQL, 100,000 specimens, ~2.5 s): selecting the cohort ~1.2 s "
    "(fetching the cohort's rows through SQLAlchemy's result layer ~0.35 s, the phenotype "
    "values and merging them at collection ~0.45 s, consent ~0.2 s), making the rows ~0.4 s "
    "(keyed codes, dicts), recording the run's specimens ~0.35 s (an INSERT … SELECT per "
    "batch; half of it the foreign key to `specimen`, whose check locks every exported "
    "specimen row FOR KEY SHARE), writing the CSV ~0.16 s; the raw join has no window rule, "
    "codes, consent rule or run record. Reading the cohort and its values through the "
    "driver's cursor, handing the writers tuples in column order and recording the run's "
    "specimens without the per-row foreign-key lock would bring it to about 0.5×."
)
_ACCESSION = (
    "17-24 ms against 15 (at 100,000 and 1,000,000 specimens): the same costs as the placing "
    "row below (an accession is ~15 statements through the ORM, most of its time in "
    "SQLAlchemy and psycopg, plus a round trip each on PostgreSQL); the fixes named there "
    "bring it under the goal."
)

_LABEL_ROLL = (
    "1.2-2.1 s across runs the same day on this shared machine (2.14 s in this loaded run); "
    "not profiled further."
)

MISS_NOTES: dict[tuple[str, str], str] = {
    ("labels: 1,000 to a PDF roll", "none"): _LABEL_ROLL,
    ("accession into freezer (full)", "postgres"): _ACCESSION,
    ("linked export to CSV", "sqlite"): _EXPORT,
    ("linked export to CSV", "postgres"): _EXPORT,
    ("TUI: scan → specimen detail", "sqlite"): _SCREEN_PER_SCAN,
    ("TUI: scan → specimen detail", "postgres"): _SCREEN_PER_SCAN,
    ("TUI: scan → box grid", "sqlite"): _BOX_SCREEN,
    ("TUI: scan → box grid", "postgres"): _BOX_SCREEN,
    ("TUI: cold start to sign-in", "sqlite"): _IMPORTS,
    ("scan lookup (per scan)", "sqlite"): (
        "the read-only unit of work costs ~120 µs before the lookup starts (Session, pool "
        "checkout, the `BEGIN DEFERRED` `db._on_begin` issues, ROLLBACK); without that BEGIN a "
        "scan takes ~127 µs, in a session kept per TUI worker ~67 µs; see the next line for "
        "the rest."
    ),
    ("scan lookup (one session)", "sqlite"): (
        "~40 µs is SQLAlchemy executing the cached Core select (raw: 13 µs for the same SQL on "
        "the session's own DB-API connection), ~25 µs the SpecimenRead/ScanResult models and "
        "the ID check; running the accession-ID query in `specimen_read.find_specimen` on "
        "`session.connection().connection.driver_connection` and building SpecimenRead from "
        "the tuple should bring it to about 45 µs (13 µs query, ~30 µs models and checks), inside "
        "the goal."
    ),
    ("scan lookup (per scan)", "postgres"): (
        "four round trips instead of one: the pool's pre-ping (`pool_pre_ping=True` in "
        "`db.make_engine`, ~70 µs), BEGIN and ROLLBACK of the read-only unit of work, then "
        "the query, plus ~85 µs in psycopg building `cursor.description` (27 columns) that "
        "SQLAlchemy reads on every execute. Binding read-only units of work with "
        "`isolation_level='AUTOCOMMIT'` in `db.uow` (READ COMMITTED gives each statement its "
        "own snapshot anyway) measured 1,020 → 540 µs, but server-side cursors (`yield_per`, "
        "which read-only work such as `audit verify` uses) need a transaction, so it wants a "
        "lookup mode of its own; a session kept per TUI worker passes (the one-session row)."
    ),
    ("8 processes placing", "postgres"): (
        "client CPU is the limit, not locking (no retries, no double booking): an accession "
        "costs ~7.5 ms of Python CPU alone and 9-12 ms with 8 processes on 2 cores (raw driver, "
        "same rows and locks: 1.2-1.5 ms), 15 statements through the ORM, 83% of profiled time in "
        "SQLAlchemy and psycopg, under 5% in biobank code. In `specimens._record_new` set the "
        "slot before the first flush (saves an UPDATE of the new row, whose version then stays "
        "1), build the returned SpecimenRead from values in hand instead of re-selecting it, "
        "fetch participant, study and visit in one query, and insert specimen and event through "
        "Core; 500/s on 2 cores needs ≤ 4 ms of CPU per accession, client and server together."
    ),
    ("legacy import (check + write)", "sqlite"): (
        "checking costs ~45 µs a row (`legacy_import._read_tube`: a closure call per cell, "
        "strptime, time zones); writing is below too (next line). Even the raw inserts plus the "
        "audit hash chain plus today's check add up to more than twice the raw time: the "
        "check needs one converter per column chosen once per sheet."
    ),
    ("legacy import (write only)", "sqlite"): (
        "for 20,000 tubes, ~1.3 s of SQLAlchemy Core per-row parameter processing (SQLite "
        "DateTime bind processors, 190k calls), ~0.9 s of audit entries (canonical JSON of each "
        "snapshot and the SHA-256 chain in `audit.record_many`/`_seal`), 0.3 s commit, against "
        "0.9 s for the raw inserts; pass tuples already in the driver's format to "
        "`session.connection().exec_driver_sql` for the specimen and event rows, and serialise "
        "each row's datetimes once for both the insert and the audit JSON."
    ),
    ("legacy import (write only)", "postgres"): (
        "0.46-0.47× at 10,000 and 100,000 rows (0.54× in an earlier run): what the raw "
        "inserts do not have — the audit entries' canonical JSON and SHA-256 chain (~45 µs a "
        "tube in `audit._seal`) and one UPDATE round trip per box for its free count "
        "(`custody.adjust_free_slots`); one executemany UPDATE for all boxes would close it."
    ),
    ("legacy import (check + write)", "postgres"): (
        "writing alone is near the goal (the line above; SQLAlchemy's multi-row INSERT … VALUES "
        "beats psycopg's row-by-row executemany); checking adds 45-70 µs a row of pure Python "
        "(`legacy_import._read_tube`, `_Checker.check_tube`); one converter per column chosen "
        "once per sheet, and one executemany UPDATE of the boxes' free counts instead of one "
        "round trip per box (`custody.adjust_free_slots`, 247 for 20,000 tubes)."
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


def _verdict(result: Result) -> str:
    return {True: "pass", False: "MISS", None: "–"}[result.passed]


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    return [
        (
            r.benchmark,
            r.engine,
            _figure(r, r.median),
            _latency(r.p99) if r.p99 is not None else "–",
            _figure(r, r.baseline),
            f"{r.ratio:.2f}×" if r.ratio is not None else "–",
            r.goal or "–",
            _verdict(r),
        )
        for r in results
    ]


def table(results: list[Result]) -> str:
    lines = [COLUMNS, *rows(results)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(_padded(line, widths) for line in lines)


def _padded(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


# Measured on their own small database or none: the inventory's size does not bear on them.
SIZE_INDEPENDENT = {"TUI: cold start to sign-in"}
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
        "process held before). What each benchmark times is in `benchmarks/` and "
        "in the JSON a run writes (`--json`).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in rows(results)),
    ]
    if smaller is not None:
        header = _growth_header(smaller, (info, results))
        lines += [
            "",
            f"How the figures grow from {smaller[0]['size']:,} to {info['size']:,} specimens "
            f"(the smaller run: {smaller[0]['date'][:10]}, same machine kind and seed): the cost "
            "of one item — a time, the inverse of a rate, a memory peak — per ten times more "
            "specimens, and what that growth projects for 10,000,000. A memory peak that stays "
            "flat shows as 1.00×.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in growth_rows(smaller, (info, results))),
        ]
    misses = [r for r in results if r.passed is False]
    if misses:
        lines += ["", "Why the misses miss, from profiles, and what would fix them:", ""]
        for r in misses:
            note = MISS_NOTES.get((r.benchmark, r.engine), "not profiled yet.")
            lines.append(f"- {r.benchmark}, {r.engine}: {note}")
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
