"""Linked phenotype export: `exports.run_export` of about 30% of the specimens (serum collected
since `COLLECTED_FROM`, for future research, Safe Harbor, CSV) beside a raw cursor writing the
same join to CSV; and the same export in every other format (`OTHER_FORMATS`: XLSX, FHIR Bulk
Data files, a FHIR bundle, Parquet, MIABIS CSV), each against the CSV export's rate (goal: at
least half of it) and with its own peak memory.

Each run is a fresh child process that only runs one export: timed there (the service's in a
committed unit of work, as the CLI runs it), and it reports its peak resident memory above what
it held before the export (`ru_maxrss` over the resident size before). Baseline: one SQL
statement through the raw driver (a server-side cursor on PostgreSQL, as the service streams)
selecting the same specimens (the same filters; consent as the dataset records it, one
signature each: a signed yes to the use and no withdrawal covering it as of the export date),
with their participant, their parent's accession ID and every exported dictionary variable
pivoted by conditional aggregation from their own visit's and their participant's values, each
with its observation year and days from collection (as the Safe Harbor export writes them),
written by `csv.writer`. The CSV, raw and other formats' runs alternate, round by round; all
must write the same number of rows.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.databases import BenchDatabase
from benchmarks.dataset import WORKSTATION, Dataset
from benchmarks.measure import Result, median, memory_result, peak_mb, rss_mb

GOAL_SHARE = 0.5
GOAL_PEAK_MB = 200.0
RUNS = 3
COLLECTED_FROM = date(2017, 1, 1)
USE = "FUTURE_RESEARCH"
SPECIMEN_TYPE = "SER"
FETCH = 5000  # rows per server-side fetch, as `cohorts.CHUNK_SPECIMENS`
ROOT = Path(__file__).resolve().parent.parent
# every format but CSV (`biobank.export.formats`) → its name in the table
OTHER_FORMATS = {
    "xlsx": "XLSX", "fhir-ndjson": "FHIR NDJSON", "fhir": "FHIR bundle", "parquet": "Parquet",
    "miabis": "MIABIS CSV",
}  # fmt: skip
VALUE_COLUMNS = {
    "integer": "value_number", "decimal": "value_number", "boolean": "value_number",
    "choice": "value_text", "multi_choice": "value_text", "date": "value_date",
}  # fmt: skip


def run(db: BenchDatabase, dataset: Dataset) -> list[Result]:
    as_of = date.today()
    runs: dict[str, list[dict[str, Any]]] = {
        side: [] for side in ("service", "raw", *OTHER_FORMATS)
    }
    for _ in range(RUNS):
        for side, done in runs.items():
            done.append(_child(db, side, as_of))
    service, raw = runs["service"], runs["raw"]
    rows = {r["rows"] for done in runs.values() for r in done}
    if len(rows) != 1:
        raise AssertionError(f"the export and the raw join wrote different rows: {rows}")
    exported = rows.pop()
    rate = median([r["rows"] / r["seconds"] for r in service])
    baseline = median([r["rows"] / r["seconds"] for r in raw])
    peak, raw_peak = max(r["peak_mb"] for r in service), max(r["peak_mb"] for r in raw)
    selection = (
        f"{SPECIMEN_TYPE} specimens collected since {COLLECTED_FROM}, consented for {USE}, "
        f"Safe Harbor, CSV: {exported:,} rows ({exported / dataset.size:.0%} of the specimens)"
    )
    details = {
        "rows": exported,
        "share_of_specimens": exported / dataset.size,
        "counts": service[0]["counts"],
        "seconds": [r["seconds"] for r in service],
        "baseline_seconds": [r["seconds"] for r in raw],
        "peak_mb": [r["peak_mb"] for r in service],
        "baseline_peak_mb": [r["peak_mb"] for r in raw],
        "csv_bytes": service[0]["bytes"],
        "baseline_csv_bytes": raw[0]["bytes"],
    }
    return [
        Result(
            benchmark="linked export to CSV",
            engine=db.engine_name,
            kind="throughput",
            median=rate,
            p99=None,
            baseline=baseline,
            goal=f"≥ {GOAL_SHARE:g}× raw",
            passed=rate >= GOAL_SHARE * baseline,
            how=f"run_export of {selection}; rows/s, median of {RUNS} runs each in a fresh "
            "process; baseline: one raw SQL join of the same specimens, participants and "
            "pivoted phenotype values written by csv.writer",
            details=details,
        ),
        memory_result(
            "linked export peak memory",
            db.engine_name,
            peak,
            baseline=raw_peak,
            goal_mb=GOAL_PEAK_MB,
            how=f"the most a process running one export of {selection} held above what it "
            f"held before it (ru_maxrss over the resident size before), the highest of {RUNS} "
            "runs; baseline: the raw join's process",
            details=details,
        ),
        *(
            result
            for fmt, label in OTHER_FORMATS.items()
            for result in _against_csv(
                db, label, runs[fmt], rate, peak, selection.replace("CSV", f"{label} ({fmt})")
            )
        ),
    ]


def _against_csv(
    db: BenchDatabase,
    label: str,
    runs: list[dict[str, Any]],
    csv_rate: float,
    csv_peak: float,
    selection: str,
) -> list[Result]:
    """The same export in another format (`label`) against the CSV's rate and peak."""
    rate = median([r["rows"] / r["seconds"] for r in runs])
    peak = max(r["peak_mb"] for r in runs)
    details = {
        "rows": runs[0]["rows"],
        "seconds": [r["seconds"] for r in runs],
        "peak_mb": [r["peak_mb"] for r in runs],
        "bytes": runs[0]["bytes"],
        "csv_rows_per_second": csv_rate,
    }
    return [
        Result(
            benchmark=f"linked export to {label}",
            engine=db.engine_name,
            kind="throughput",
            median=rate,
            p99=None,
            baseline=csv_rate,
            goal=f"≥ {GOAL_SHARE:g}× CSV",
            passed=rate >= GOAL_SHARE * csv_rate,
            how=f"run_export of {selection}; specimens/s, median of {RUNS} runs each in a fresh "
            "process; baseline: the same export to CSV",
            details=details,
        ),
        memory_result(
            f"linked export to {label} peak memory",
            db.engine_name,
            peak,
            baseline=csv_peak,
            goal_mb=GOAL_PEAK_MB,
            how=f"the most a process running one export of {selection} held above what it "
            f"held before it, the highest of {RUNS} runs; baseline: the CSV export's",
            details=details,
        ),
    ]


def _child(db: BenchDatabase, side: str, as_of: date) -> dict[str, Any]:
    """One export in a fresh process; its report."""
    command = [sys.executable, "-m", "benchmarks.export_bench", side, db.engine_name, db.url]
    command.append(as_of.isoformat())
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {side} export failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def _service_export(
    db: BenchDatabase, as_of: date, folder: Path, fmt: str = "csv"
) -> dict[str, Any]:
    from biobank.db import make_engine, uow
    from biobank.domain.cohort import CohortQuery
    from biobank.export.formats import FORMATS
    from biobank.services.exports import ExportRequest, run_export
    from biobank.services.identity import actor_for

    engine = make_engine(db.url)
    with uow(engine, readonly=True) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
    request = ExportRequest(
        query=CohortQuery(specimen_types=[SPECIMEN_TYPE], collected_from=COLLECTED_FROM),
        uses=[USE],
        formats=[fmt],
        as_of=as_of,
    )
    before = rss_mb()
    start = time.perf_counter()
    with uow(engine) as session:
        result = run_export(session, actor=admin, request=request, directory=folder)
    seconds = time.perf_counter() - start
    data = [f for f in result.files if f.name in FORMATS[fmt].files]
    return {
        "seconds": seconds,
        "rows": result.counts["specimens"],
        "bytes": sum(f.bytes for f in data),
        "counts": result.counts,
        "peak_mb": max(0.0, peak_mb() - before),
    }


def raw_join(db: BenchDatabase, connection) -> str:
    """The baseline's statement: the selected specimens, one row each, with their values."""
    variables = connection.execute(
        "SELECT id, name, value_type FROM phenotype_variable ORDER BY id"
    ).fetchall()
    observed = "v.observed_on"
    if db.engine_name == "postgres":
        year = f"EXTRACT(YEAR FROM {observed})"
        lag = f"({observed} - CAST(s.collected_at AS DATE))"
    else:
        year = f"CAST(strftime('%Y', {observed}) AS INTEGER)"
        lag = f"CAST(julianday({observed}) - julianday(date(s.collected_at)) AS INTEGER)"
    pivots = ",\n".join(
        f'MAX(CASE WHEN v.variable_id = {var_id} THEN v.{VALUE_COLUMNS[kind]} END) AS "{name}", '
        f'MAX(CASE WHEN v.variable_id = {var_id} THEN {year} END) AS "{name}__observed", '
        f'MAX(CASE WHEN v.variable_id = {var_id} THEN {lag} END) AS "{name}__days_from_collection"'
        for var_id, name, kind in variables
        if kind in VALUE_COLUMNS
    )
    return db.sql(
        f"""
        SELECT p.code, p.sex, s.accession_id, parent.accession_id AS parent_accession_id,
            s.kind, s.specimen_type, s.container_type, s.sprec_code, s.collected_at,
            p.birth_year, s.quantity, s.unit, s.freeze_thaw_count,
            {pivots}
        FROM specimen s
        JOIN participant p ON p.id = s.participant_id
        LEFT JOIN specimen parent ON parent.id = s.parent_id
        LEFT JOIN phenotype_value v ON v.participant_id = s.participant_id
            AND (v.visit_id = s.visit_id OR v.visit_id IS NULL)
        WHERE s.status = 'available' AND s.specimen_type = ? AND s.collected_at >= ?
            AND EXISTS (
                SELECT 1 FROM participant_consent c
                JOIN consent_answer a ON a.participant_consent_id = c.id
                WHERE c.participant_id = s.participant_id AND a.statement_id = ?
                    AND a.answer = ? AND c.signed_on <= ?)
            AND NOT EXISTS (
                SELECT 1 FROM consent_withdrawal w
                WHERE w.participant_id = s.participant_id AND w.withdrawn_on <= ?
                    AND (w.statement_id IS NULL OR w.statement_id = ?))
        GROUP BY s.id, p.id, parent.id
        ORDER BY s.participant_id, s.id
        """
    )


def _raw_export(db: BenchDatabase, as_of: date, folder: Path) -> dict[str, Any]:
    postgres = db.engine_name == "postgres"
    path = folder / "specimens.csv"
    with closing(db.connect()) as connection:
        sql = raw_join(db, connection)
        use = connection.execute(
            db.sql("SELECT id FROM consent_statement WHERE code = ?"), (USE,)
        ).fetchone()[0]
        day = as_of if postgres else as_of.isoformat()
        since = COLLECTED_FROM if postgres else COLLECTED_FROM.isoformat()
        params = (SPECIMEN_TYPE, since, use, True, day, day, use)
        before = rss_mb()
        start = time.perf_counter()
        cursor = connection.cursor(name="export") if postgres else connection.cursor()
        if postgres:
            cursor.itersize = FETCH
        cursor.execute(sql, params)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(column[0] for column in cursor.description)
            writer.writerows(cursor)
        seconds = time.perf_counter() - start
        cursor.close()
    with path.open(newline="") as file:
        rows = sum(1 for _ in csv.reader(file)) - 1
    return {
        "seconds": seconds,
        "rows": rows,
        "bytes": path.stat().st_size,
        "peak_mb": max(0.0, peak_mb() - before),
    }


def _main(side: str, engine_name: str, url: str, as_of: str) -> None:
    db = BenchDatabase(engine_name, url)
    export = {"service": _service_export, "raw": _raw_export}.get(side) or (
        lambda *given: _service_export(*given, fmt=side)
    )
    with tempfile.TemporaryDirectory(prefix="biobank_export_bench_") as folder:
        print(json.dumps(export(db, date.fromisoformat(as_of), Path(folder))))


if __name__ == "__main__":
    _main(*sys.argv[1:])
