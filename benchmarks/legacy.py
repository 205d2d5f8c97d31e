"""Legacy import throughput: a lab's spreadsheet through `imports.legacy`, beside the raw driver
writing the same rows, interleaved.

The sheet is shaped like the lab's (tests/data/legacy_inventory.csv): sample ID, subject, visit,
type, volume, US date, clock times, freezer > rack > box > position, thaws, comments; its
tubes fill new boxes of a new freezer, and its subjects are new participants.

Every run writes into a fresh copy of the benchmark's database (the whole inventory), each
copy made the same way, so import and baseline meet the same indexes equally warm: the import
in a fresh process that only imports, as `biobank import legacy` runs (checking and writing the
file in one committed unit of work, and the writing alone; the process reports its peak
resident memory above what it held before: the import spools checked rows to disk, so it
should not grow with the sheet), and the baseline with the raw driver in this one: every row
that import writes, table by table (read back from the first import's copy), inserted in one
transaction and committed, by each engine's fastest plain method (SQLite: executemany, with
the page cache an import writes with, `db.prepare_bulk_writing`; PostgreSQL: COPY, as
`db.insert_many` writes an import's rows). Import and baseline alternate, round by round,
each round starting with the other than the last, so the machine's load weighs on both alike;
the result is the round whose ratio is the median, and every round's ratio and the load
average as it began are in the details.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchmarks.databases import BenchDatabase
from benchmarks.dataset import STUDY, WORKSTATION, Dataset
from benchmarks.measure import (
    Result,
    import_shares,
    interleaved,
    memory_result,
    peak_mb,
    rss_mb,
)
from benchmarks.raw import BULK_METHOD, bulk_write, written_rows
from biobank.db import uow
from biobank.domain.positions import fill_sequence, position_label
from biobank.domain.vocabulary import FillOrder, PositionLabels
from biobank.services.identity import actor_for
from biobank.services.imports import legacy as legacy_import

GOAL_SHARE = 0.5
GOAL_PEAK_MB = 200.0
ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3
TUBES_PER_SUBJECT = 20
BOXES_PER_RACK = 12
VISITS = (("baseline", 0), ("month_6", 182), ("month_12", 365))
TYPES = (("CEL", 1000), ("BUF", 250), ("PL1", 500), ("SER", 500))
COMMENTS = ("", "", "", "slightly hemolyzed", "low volume")


def run(
    db: BenchDatabase, engine: Engine, dataset: Dataset, *, rows: int, say: Callable
) -> list[Result]:
    engine.dispose()  # a PostgreSQL database is copied only with nothing connected to it
    rounds: list[dict[str, Any]] = []
    written: dict[sa.Table, list[tuple]] = {}
    with TemporaryDirectory() as folder:
        path = Path(folder) / "legacy_inventory.csv"
        write_sheet(path, rows)
        for n, order in enumerate(interleaved(ROUNDS, "import", "baseline")):
            say(f"legacy import of {rows:,} rows and its baseline: round {n + 1} of {ROUNDS}")
            timed: dict[str, Any] = {"first": order[0], "load_average": os.getloadavg()[0]}
            for step in order:
                with db.scratch_copy() as fresh:
                    if step == "import":
                        timed[step] = _child(fresh, path, rows)
                        if not written:
                            written = written_rows(db, fresh)
                    else:
                        timed[step] = bulk_write(fresh, written)
            rounds.append(timed)
    return _results(db.engine_name, rows, rounds, written)


def _results(
    engine: str, rows: int, rounds: list[dict[str, Any]], written: dict[sa.Table, list[tuple]]
) -> list[Result]:
    method = BULK_METHOD[engine]
    tables = {t.name: len(r) for t, r in written.items()}
    how = (
        f"check_inventory + write_inventory of a {rows:,}-row sheet in one committed unit of "
        f"work, in a fresh process, into a fresh copy of the benchmark's database; it writes "
        f"{tables}; baseline: those rows with the raw driver's {method}, one committed "
        f"transaction into another fresh copy made the same way; {ROUNDS} rounds, import and "
        "baseline alternating; the round with the median ratio"
    )
    details = {
        "rows": rows,
        "baseline_method": method,
        "rounds": [
            {
                "first": r["first"],
                "load_average": round(r["load_average"], 2),
                "check_seconds": round(r["import"]["check_seconds"], 2),
                "write_seconds": round(r["import"]["write_seconds"], 2),  # with the commit
                "baseline_seconds": round(r["baseline"]["seconds"], 2),
                "baseline_commit_seconds": round(r["baseline"]["commit_seconds"], 2),
                "peak_mb": round(r["import"]["peak_mb"], 1),
            }
            for r in rounds
        ],
    }
    return [
        *import_shares(
            "legacy import", engine, rows, rounds, goal_share=GOAL_SHARE, how=how, details=details
        ),
        memory_result(
            "legacy import peak memory",
            engine,
            statistics.median(r["import"]["peak_mb"] for r in rounds),
            baseline=None,
            goal_mb=GOAL_PEAK_MB,
            how=f"the most the process importing the {rows:,}-row sheet held above what it held "
            f"before the import (VmHWM over the resident size before), median of {ROUNDS}",
            details={"rows": rows},
        ),
    ]


def write_sheet(path: Path, rows: int) -> None:
    """A legacy sheet of `rows` tubes, 20 per subject over three visits, boxes filled in order."""
    positions = [
        position_label(r, c, cols=9, scheme=PositionLabels.letter_number)
        for r, c in fill_sequence(9, 9, FillOrder.row_major)
    ]
    with path.open("w", newline="") as file:
        sheet = csv.writer(file)
        sheet.writerow(legacy_import.FIELDS.values())
        for n in range(rows):
            person, tube = divmod(n, TUBES_PER_SUBJECT)
            subject = f"LEG{person + 1:05d}"
            visit, days = VISITS[tube * len(VISITS) // TUBES_PER_SUBJECT]
            specimen_type, volume = TYPES[n % len(TYPES)]
            box, slot = divmod(n, len(positions))
            collected = date(2016, 1, 4) + timedelta(days=person % 1500 + days)
            sheet.writerow(
                [
                    f"{subject}-{visit[:2].upper()}-{specimen_type}-{tube + 1:02d}",
                    subject,
                    visit,
                    specimen_type,
                    volume,
                    collected.strftime("%m/%d/%Y"),
                    "09:00",
                    f"{10 + n % 3}:00",
                    "FRZ-01",
                    f"R{box // BOXES_PER_RACK + 1:02d}",
                    f"BOX-{box + 1:04d}",
                    positions[slot],
                    n % 3,
                    COMMENTS[n % len(COMMENTS)],
                ]
            )


def _child(db: BenchDatabase, path: Path, rows: int) -> dict[str, float]:
    """The import in a fresh process; its report."""
    command = [sys.executable, "-m", "benchmarks.legacy", db.engine_name, db.url, str(path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the legacy import failed:\n{done.stderr}")
    report = json.loads(done.stdout.splitlines()[-1])
    if report["imported"] != rows:
        raise AssertionError(f"the import wrote {report['imported']} of {rows} rows")
    return report


def _import(db: BenchDatabase, path: Path) -> dict[str, float]:
    """Seconds checking, seconds writing and committing, and the memory it took."""
    from biobank.db import make_engine

    engine = make_engine(db.url)
    with uow(engine, readonly=True) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
    before = rss_mb()
    start = time.perf_counter()
    with uow(engine) as session:
        plan = legacy_import.check_inventory(session, actor=admin, path=path, study=STUDY)
        checked = time.perf_counter()
        report = legacy_import.write_inventory(session, actor=admin, plan=plan)
    done = time.perf_counter()
    return {
        "check_seconds": checked - start,
        "write_seconds": done - checked,
        "imported": report.imported,
        "peak_mb": max(0.0, peak_mb() - before),
    }


if __name__ == "__main__":
    engine_name, url, sheet = sys.argv[1:]
    print(json.dumps(_import(BenchDatabase(engine_name, url), Path(sheet))))
