"""Legacy import throughput: a lab's spreadsheet through `imports.legacy`, beside the raw driver
inserting the same rows.

The sheet is shaped like the lab's (tests/data/legacy_inventory.csv): sample ID, subject, visit,
type, volume, US date, clock times, freezer > rack > box > position, thaws, comments; its
tubes fill new boxes of a new freezer, and its subjects are new participants. Timed, in a fresh
process that only imports (as `biobank import legacy` runs): checking and writing the file in
one committed unit of work, and the writing alone; that process reports its peak resident
memory above what it held before (the import spools checked rows to disk, so it should not
grow with the sheet). Baseline: the rows that import writes (every table; taken from a dry run
that is rolled back), inserted with the raw driver's executemany in one transaction and
committed, as the import commits (SQLite's commit writes what the transaction left in its page
cache and checkpoints the log: about a quarter of the baseline's time), in a scratch copy of
the database, so the import can follow; on SQLite with the page cache an import writes with
(`db.prepare_bulk_writing`).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from benchmarks.databases import BenchDatabase
from benchmarks.dataset import STUDY, WORKSTATION, Dataset
from benchmarks.measure import Result, memory_result, peak_mb, rss_mb, share_result
from benchmarks.raw import RawInsert
from biobank.db import BULK_CACHE_KIB, uow
from biobank.domain.positions import fill_sequence, position_label
from biobank.domain.vocabulary import FillOrder, PositionLabels
from biobank.services.identity import actor_for
from biobank.services.imports import legacy as legacy_import

GOAL_SHARE = 0.5
GOAL_PEAK_MB = 200.0
ROOT = Path(__file__).resolve().parent.parent
BASELINE_RUNS = 3
TUBES_PER_SUBJECT = 20
BOXES_PER_RACK = 12
VISITS = (("baseline", 0), ("month_6", 182), ("month_12", 365))
TYPES = (("CEL", 1000), ("BUF", 250), ("PL1", 500), ("SER", 500))
COMMENTS = ("", "", "", "slightly hemolyzed", "low volume")


def run(
    db: BenchDatabase, engine: Engine, dataset: Dataset, *, rows: int, say: Callable
) -> list[Result]:
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
    with TemporaryDirectory() as folder:
        path = Path(folder) / "legacy_inventory.csv"
        write_sheet(path, rows)
        say("legacy import: dry run to learn what it writes")
        written = _dry_run(engine, admin, path)
        say(f"legacy import: raw executemany of {sum(map(len, written.values())):,} rows")
        engine.dispose()  # a PostgreSQL database is copied only with nothing connected to it
        runs = sorted(_raw_insert(db, written) for _ in range(BASELINE_RUNS))
        baseline, baseline_commit = runs[len(runs) // 2]
        say("legacy import: through the service, in its own process")
        imported = _child(db, path, rows)
    check, write = imported["check_seconds"], imported["write_seconds"]
    tables = {t.name: len(r) for t, r in written.items()}
    how = (
        f"check_inventory + write_inventory of a {rows:,}-row sheet in one committed unit of "
        f"work; it writes {tables}; baseline: those rows with the raw driver's executemany, "
        f"one committed transaction in a copy of the database, median of {BASELINE_RUNS}"
    )
    details = {
        "check_seconds": round(check, 2),
        "write_seconds": round(write, 2),  # with the commit
        "baseline_seconds": round(baseline, 2),
        "baseline_commit_seconds": round(baseline_commit, 2),
    }
    return [
        *(
            share_result(
                f"legacy import ({part})",
                db.engine_name,
                rows / seconds,
                baseline=rows / baseline,
                goal_share=GOAL_SHARE,
                how=how,
                details=details,
            )
            for part, seconds in (("check + write", check + write), ("write only", write))
        ),
        memory_result(
            "legacy import peak memory",
            db.engine_name,
            imported["peak_mb"],
            baseline=None,
            goal_mb=GOAL_PEAK_MB,
            how=f"the most the process importing the {rows:,}-row sheet held above what it held "
            "before the import (ru_maxrss over the resident size before)",
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


def _dry_run(engine: Engine, admin, path: Path) -> dict[sa.Table, list[dict[str, Any]]]:
    """Every row the import inserts, table by table (parents first), read back before the
    transaction is rolled back."""
    tables = [t for t in SQLModel.metadata.sorted_tables if "id" in t.c]
    with Session(engine) as session:
        last = {t: session.execute(sa.select(sa.func.max(t.c.id))).scalar() or 0 for t in tables}
        plan = legacy_import.check_inventory(session, actor=admin, path=path, study=STUDY)
        legacy_import.write_inventory(session, actor=admin, plan=plan)
        written = {
            t: [
                dict(row._mapping)
                for row in session.execute(sa.select(t).where(t.c.id > last[t]).order_by(t.c.id))
            ]
            for t in tables
        }
        session.rollback()
    return {t: rows for t, rows in written.items() if rows}


def _raw_insert(
    db: BenchDatabase, written: dict[sa.Table, list[dict[str, Any]]]
) -> tuple[float, float]:
    """Seconds the raw driver takes to insert the rows, one executemany per table, and commit
    them (in a copy of the database, dropped afterwards); and how many of them the commit took."""
    inserts = {t: RawInsert(db, t, with_id=True) for t in written}
    params = {t: [inserts[t].params(row) for row in rows] for t, rows in written.items()}
    with db.scratch_copy() as copy, closing(copy.connect()) as connection:
        cursor = connection.cursor()
        if copy.engine_name == "sqlite":
            cursor.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
        start = time.perf_counter()
        if copy.engine_name == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        for table, insert in inserts.items():
            cursor.executemany(insert.sql, params[table])
        committing = time.perf_counter()
        connection.commit()
        done = time.perf_counter()
    return done - start, done - committing


if __name__ == "__main__":
    engine_name, url, sheet = sys.argv[1:]
    print(json.dumps(_import(BenchDatabase(engine_name, url), Path(sheet))))
