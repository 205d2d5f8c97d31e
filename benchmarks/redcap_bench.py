"""REDCap import throughput and memory: a longitudinal project through `imports.redcap`, beside
the raw driver writing the same rows into the same kind of fresh database, interleaved.

The project is shaped as registries keep theirs, written as REDCap writes its downloads: a data
dictionary and a raw records export of five events a record (baseline, months 6 to 24), whose
baseline row holds the demographics (record ID as REDCap numbers them, MRN flagged as an
identifier, sex, birth year, diagnosis date, ethnic group: participant-level) and whose every row
holds a visit form of a visit date and a dozen fields of mixed types (numbers, integers, a date,
radio, dropdown, a checkbox of four choices, yes/no, free text), some left blank.

Every run writes into a fresh copy of one migrated database (bootstrapped, with the study):
the import in a fresh process that only imports, as `biobank import redcap` does
(`check_redcap` + `write_redcap` in one committed unit of work; the process reports its peak
resident memory above what it held before), and the baseline with the raw driver in this one:
every row that import writes, table by table (read back from the first import's copy), inserted
in one transaction and committed, by each engine's fastest plain method (SQLite: executemany,
with the page cache an import writes with; PostgreSQL: COPY). Import and baseline alternate,
round by round, each round starting with the other than the last, so the machine's load weighs
on both alike; the result is the round whose ratio is the median. Peak memory is measured at
the full size and at a tenth of it: flat in the number of records, it hardly grows.

`python -m benchmarks.redcap_bench --rows 100000` runs it alone, on fresh databases of its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from benchmarks.databases import (
    ENGINES,
    BenchDatabase,
    Unreachable,
    bench_database,
    postgres_database,
)
from benchmarks.dataset import STUDY, WORKSTATION
from benchmarks.measure import Result, import_shares, interleaved, peak_mb, progress, rss_mb
from benchmarks.raw import BULK_METHOD, bulk_write, written_rows
from biobank import migrate
from biobank.bootstrap import bootstrap
from biobank.db import make_engine, uow
from biobank.services.identity import actor_for
from biobank.services.imports.redcap import check_redcap, redcap_mapping, write_redcap
from biobank.services.studies import add_study

GOAL_SHARE = 0.5
GOAL_PEAK_MB = 200.0
GOAL_GROWTH = 1.5  # the peak at ten times the records, at most this many times the smaller's
ROUNDS = 3
ROOT = Path(__file__).resolve().parent.parent
EVENTS = ("baseline", "month_6", "month_12", "month_18", "month_24")
HEADERS = (
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note",
    "Text Validation Type OR Show Slider Number", "Text Validation Min", "Text Validation Max",
    "Identifier?", "Branching Logic (Show field only if...)", "Required Field?",
    "Custom Alignment", "Question Number (surveys only)", "Matrix Group Name", "Matrix Ranking?",
    "Field Annotation",
)  # fmt: skip
# name, form, type, label, choices, validation, identifier
FIELDS = (
    ("record_id", "demographics", "text", "Record ID", "", "", ""),
    ("mrn", "demographics", "text", "Medical record number", "", "", "y"),
    ("sex", "demographics", "radio", "Sex", "1, Female | 2, Male | 3, Unknown", "", ""),
    ("birth_year", "demographics", "text", "Year of birth", "", "integer", ""),
    ("bm_dx_date", "demographics", "text", "Date of diagnosis", "", "date_ymd", ""),
    ("bm_ethnic", "demographics", "radio", "Ethnic group",
     "1, Hispanic | 2, Not Hispanic | 3, Unknown", "", ""),
    ("visit_date", "visit", "text", "Visit date", "", "date_ymd", ""),
    ("bm_weight", "visit", "text", "Weight (kg)", "", "number", ""),
    ("bm_sbp", "visit", "text", "Systolic pressure (mmHg)", "", "integer", ""),
    ("bm_dbp", "visit", "text", "Diastolic pressure (mmHg)", "", "integer", ""),
    ("bm_crp", "visit", "text", "CRP (mg/L)", "", "number", ""),
    ("bm_hb", "visit", "text", "Haemoglobin (g/dL)", "", "number", ""),
    ("bm_flare_date", "visit", "text", "Date of the last flare", "", "date_ymd", ""),
    ("bm_smoking", "visit", "radio", "Smoking", "0, Never | 1, Former | 2, Current", "", ""),
    ("bm_activity", "visit", "dropdown", "Disease activity",
     "1, Remission | 2, Low | 3, Moderate | 4, High", "", ""),
    ("bm_symptoms", "visit", "checkbox", "Symptoms",
     "1, Fever | 2, Rash | 3, Arthritis | 4, Ulcers", "", ""),
    ("bm_pregnant", "visit", "yesno", "Pregnant", "", "", ""),
    ("bm_steroid", "visit", "yesno", "On steroids", "", "", ""),
    ("bm_notes", "visit", "notes", "Notes", "", "", ""),
)  # fmt: skip
SYMPTOMS = ("1", "2", "3", "4")
NOTES = ("", "", "", "feels well", "joint pain in the mornings", "missed the last dose")


def run(db: BenchDatabase, *, rows: int, say: Callable[[str], None]) -> list[Result]:
    """The import of `rows` records-events against its baseline, and its memory at a tenth."""
    small = max(rows // 10, len(EVENTS))
    with (
        tempfile.TemporaryDirectory(prefix="biobank_redcap_") as folder,
        template_database(db, Path(folder)) as template,
    ):
        big, tenth = Path(folder) / "big", Path(folder) / "tenth"
        write_project(big, rows)
        write_project(tenth, small)
        say(f"REDCap import of {small:,} records-events (memory)")
        with template.scratch_copy() as fresh:
            smaller = _child(fresh, tenth, small)
        rounds = []
        written: dict[sa.Table, list[tuple]] = {}
        for n, order in enumerate(interleaved(ROUNDS, "import", "baseline")):
            say(f"REDCap import of {rows:,} records-events: round {n + 1} of {ROUNDS}")
            timed: dict[str, Any] = {}
            for step in order:
                with template.scratch_copy() as fresh:
                    if step == "import":
                        timed[step] = _child(fresh, big, rows)
                        if not written:
                            written = written_rows(template, fresh)
                    else:
                        timed[step] = bulk_write(fresh, written)
            rounds.append(timed)
    return _results(db.engine_name, rows, small, rounds, smaller, written)


def _results(
    engine: str,
    rows: int,
    small: int,
    rounds: list[dict[str, Any]],
    smaller: dict[str, Any],
    written: dict[sa.Table, list[tuple]],
) -> list[Result]:
    method = BULK_METHOD[engine]
    tables = {t.name: len(r) for t, r in written.items()}
    how = (
        f"check_redcap + write_redcap of a longitudinal project of {rows:,} records-events "
        f"({rows // len(EVENTS):,} records × {len(EVENTS)} events, 12 fields an event, "
        f"demographics) in one committed unit of work, in a fresh process, into a fresh copy of "
        f"a migrated database; it writes {tables}; baseline: those rows with the raw driver's "
        f"{method}, one committed transaction into another fresh copy; {ROUNDS} rounds, import "
        "and baseline alternating; the round with the median ratio"
    )
    details = {
        "records_events": rows,
        "baseline_method": method,
        "rounds": [
            {
                "check_seconds": round(r["import"]["check_seconds"], 2),
                "write_seconds": round(r["import"]["write_seconds"], 2),
                "baseline_seconds": round(r["baseline"]["seconds"], 2),
                "baseline_commit_seconds": round(r["baseline"]["commit_seconds"], 2),
                "peak_mb": round(r["import"]["peak_mb"], 1),
            }
            for r in rounds
        ],
    }
    found = import_shares(
        "REDCap import", engine, rows, rounds, goal_share=GOAL_SHARE, how=how, details=details
    )
    peak = statistics.median(r["import"]["peak_mb"] for r in rounds)
    grown = peak / smaller["peak_mb"] if smaller["peak_mb"] else None
    found.append(
        Result(
            benchmark="REDCap import peak memory",
            engine=engine,
            kind="memory",
            median=peak,
            p99=None,
            baseline=smaller["peak_mb"],
            goal=f"≤ {GOAL_PEAK_MB:g} MB, ≤ {GOAL_GROWTH:g}× at a tenth",
            passed=peak <= GOAL_PEAK_MB and (grown is None or grown <= GOAL_GROWTH),
            how=f"the most the process importing {rows:,} records-events held above what it "
            f"held before the import (VmHWM over the resident size before), median of {ROUNDS}; "
            f"baseline: the same at a tenth of the records ({small:,} records-events), so the "
            "ratio is how the peak grows with ten times the records",
            details={
                "records_events": rows,
                "smaller_records_events": small,
                "smaller_rows_per_second": round(
                    small / (smaller["check_seconds"] + smaller["write_seconds"])
                ),
            },
        )
    )
    return found


def write_project(folder: Path, rows: int, *, seed: int = 1, first: int = 0) -> tuple[Path, Path]:
    """The data dictionary and a raw records export of `rows` records-events (five a record;
    a last record has the rest), deterministic for the seed; the records (their IDs and MRNs)
    those of people `first` onwards, so that two projects' people are not the same."""
    folder.mkdir(parents=True, exist_ok=True)
    dictionary, records = folder / "dictionary.csv", folder / "records.csv"
    with dictionary.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(HEADERS)
        for name, form, kind, label, choices, validation, identifier in FIELDS:
            writer.writerow(
                [name, form, "", kind, label, choices, "", validation, "", "", identifier]
                + [""] * 7
            )
    forms = list(dict.fromkeys(f[1] for f in FIELDS))
    columns = ["record_id", "redcap_event_name"]
    for form in forms:
        for name, field_form, kind, *_ in FIELDS[1:]:
            if field_form == form:
                columns += [f"{name}___{c}" for c in SYMPTOMS] if kind == "checkbox" else [name]
        columns.append(f"{form}_complete")
    rng = random.Random(seed)
    with records.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for n in range(rows):
            person, event = divmod(n, len(EVENTS))
            cells = _cells(rng, first + person, event)
            writer.writerow([cells.get(c, "") for c in columns])
    return dictionary, records


def _cells(rng: random.Random, person: int, event: int) -> dict[str, str]:
    """One row: a record's event, as REDCap exports it raw (codes, not labels)."""
    born = 1950 + person % 50
    enrolled = date(2015, 1, 5) + timedelta(days=person % 2000)
    cells = {
        "record_id": str(person + 1),
        "redcap_event_name": f"{EVENTS[event]}_arm_1",
        "visit_date": (enrolled + timedelta(days=182 * event + rng.randint(0, 20))).isoformat(),
        "bm_weight": f"{rng.uniform(45, 110):.1f}",
        "bm_sbp": str(rng.randint(95, 170)),
        "bm_dbp": str(rng.randint(55, 100)),
        "bm_crp": f"{rng.uniform(0.2, 40):.1f}" if rng.random() < 0.9 else "",
        "bm_hb": f"{rng.uniform(8, 16):.1f}",
        "bm_flare_date": (enrolled + timedelta(days=182 * event - rng.randint(1, 150))).isoformat()
        if rng.random() < 0.25
        else "",
        "bm_smoking": str(rng.choice((0, 0, 0, 1, 2))),
        "bm_activity": str(rng.randint(1, 4)),
        "bm_pregnant": "1" if rng.random() < 0.03 else "0",
        "bm_steroid": str(rng.randint(0, 1)),
        "bm_notes": rng.choice(NOTES),
        "visit_complete": "2",
    }
    ticked = {c for c in SYMPTOMS if rng.random() < 0.3}
    cells |= {f"bm_symptoms___{c}": str(int(c in ticked)) for c in SYMPTOMS}
    if event == 0:
        cells |= {
            "mrn": f"{70000000 + person * 7919 % 29999999:08d}",
            "sex": rng.choice(("1", "1", "1", "2", "3")),
            "birth_year": str(born),
            "bm_dx_date": (enrolled - timedelta(days=rng.randint(30, 3000))).isoformat(),
            "bm_ethnic": str(rng.randint(1, 3)),
            "demographics_complete": "2",
        }
    return cells


@contextmanager
def template_database(db: BenchDatabase, folder: Path) -> Iterator[BenchDatabase]:
    """A migrated, bootstrapped database with the study, beside `db` (SQLite: in `folder`),
    dropped afterwards: every run works on a fresh copy of it."""
    if db.engine_name == "sqlite":
        template = BenchDatabase("sqlite", f"sqlite:///{folder / 'redcap_template.sqlite'}")
        _prepare(template)
        yield template
        return
    name = f"{make_url(db.url).database}_redcap"
    with postgres_database(db.url, name) as template:
        _prepare(template)
        yield template


def _prepare(db: BenchDatabase) -> None:
    engine = make_engine(db.url)
    migrate.upgrade(engine)
    bootstrap(engine)
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
        add_study(session, actor=admin, code=STUDY, title="Lupus registry")
    engine.dispose()  # a PostgreSQL template is copied only with nothing connected to it


def _child(db: BenchDatabase, folder: Path, rows: int) -> dict[str, Any]:
    """The import in a fresh process; its report."""
    command = [sys.executable, "-m", "benchmarks.redcap_bench", "--child", db.engine_name]
    command += [db.url, str(folder)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the REDCap import failed:\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if report["visits"] != rows:
        raise AssertionError(f"the import added {report['visits']} of {rows} visits")
    return report


def _import(db: BenchDatabase, folder: Path) -> dict[str, Any]:
    """Seconds checking, seconds writing and committing, what it added, and the memory it
    took (as `biobank import redcap` runs: the shipped mapping, one unit of work)."""
    engine = make_engine(db.url)
    with uow(engine, readonly=True) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
    mapping = redcap_mapping()
    before = rss_mb()
    start = time.perf_counter()
    with uow(engine) as session:
        plan = check_redcap(
            session,
            actor=admin,
            dictionary=folder / "dictionary.csv",
            records=folder / "records.csv",
            study=STUDY,
            mapping=mapping,
        )
        if not plan.writable:
            faults = [f.model_dump() for f in plan.report.faults[:5]]
            raise AssertionError(f"the project has {plan.report.fault_count} faults: {faults}")
        checked = time.perf_counter()
        report = write_redcap(session, actor=admin, plan=plan)
    done = time.perf_counter()
    assert report.visits is not None and report.values is not None
    return {
        "check_seconds": checked - start,
        "write_seconds": done - checked,
        "visits": report.visits.added,
        "values": report.values.added,
        "peak_mb": max(0.0, peak_mb() - before),
    }


def main(argv: list[str] | None = None) -> int:
    """Alone: `--rows` records-events on each engine, on fresh databases; the table on
    stdout."""
    from benchmarks import report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.redcap_bench")
    parser.add_argument("--rows", type=int, default=100_000, help="records-events (100,000)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", type=Path, help="write the results and machine info here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        engine_name, url, folder = args.child
        print(json.dumps(_import(BenchDatabase(engine_name, url), Path(folder))))
        return 0
    results: list[Result] = []
    try:
        for engine_name in args.engines.split(","):
            with bench_database(engine_name, size=args.rows, directory=None, keep=False) as db:
                say = lambda message, e=engine_name: progress(f"[{e}] {message}")  # noqa: E731
                results += run(db, rows=args.rows, say=say)
    except Unreachable as error:
        progress(str(error))
        return 8
    if args.json:
        info = report.machine(size=args.rows, seed=1, quick=False, versions={})
        report.write_json(args.json, info, results)
    print(report.table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
