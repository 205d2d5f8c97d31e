"""The audit chain under a lab's day: another terminal accessioning while an import runs (a
legacy inventory sheet, a REDCap project), and `audit verify`, whole and after a verified
checkpoint.

Stall: rounds of accessions with nothing else running, then accessions while an import runs in
another process (from the moment its unit of work has begun to the moment it has committed),
each in its own committed unit of work as at a terminal; no import, import, no import… so both
see the same load. Each round imports new subjects (the REDCap project's record IDs marked by
the round), so every round writes as much. On PostgreSQL an import's audit entries are written under
no lock and sealed by one entry at commit; on SQLite there is one writer, and an accession
waits for the import's whole unit of work (its bound: the import's length, refused after the
10 s busy timeout).

Verify: `audit.verify_chain` over the whole chain, interleaved round by round with the raw
baseline: the same rows read with the raw driver and hashed in plain Python (the standard
library's `json`, as the chain was first written). Then, as after a night's verification, a
verified checkpoint is appended, a busy day's work is done (a large sheet imported and a few
thousand tubes accessioned), and the incremental verification after it is timed beside the
raw baseline hashing just the new entries.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from sqlalchemy.engine import Engine

from benchmarks.concurrency import free_positions
from benchmarks.databases import BenchDatabase
from benchmarks.dataset import STUDY, WORKSTATION, Dataset, accession_tube
from benchmarks.legacy import write_sheet
from benchmarks.measure import Result, median, p99
from benchmarks.redcap_bench import write_project
from biobank.db import uow
from biobank.domain.permissions import Actor
from biobank.errors import BiobankError
from biobank.services import audit
from biobank.services.identity import actor_for
from biobank.services.imports import legacy

STALL_ROWS = 30_000  # the legacy import a terminal waits behind, at most
REDCAP_STALL_ROWS = 10_000  # the REDCap import's records-events (it writes ~25 rows each)
DAY_IMPORT_ROWS = 10_000  # a busy day: a large sheet imported,
DAY_ACCESSIONS = 2_000  # and this many tubes accessioned at the terminals (room allowing)
GOAL_STALL_P99 = 0.100
GOAL_VERIFY_RATE = 100_000
GOAL_INCREMENTAL = 1.0
ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (
    "occurred_at", "actor", "workstation", "action", "entity", "entity_id", "before", "after",
    "reason", "prev_hash", "hash",
)  # fmt: skip


def run(
    db: BenchDatabase,
    engine: Engine,
    dataset: Dataset,
    *,
    import_rows: int,
    rounds: int,
    quiet: int,
    rng: random.Random,
    say: Callable[[str], None],
) -> list[Result]:
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
    results = _verify_whole(db, engine, admin, rounds=rounds, say=say)
    with uow(engine, readonly=True) as session:
        checkpoint = audit.verify_chain(session, actor=admin, incremental=True)
    with uow(engine) as session:
        audit.record_verified(session, actor=admin, report=checkpoint)
    for kind, rows in (("legacy", import_rows), ("REDCap", min(import_rows, REDCAP_STALL_ROWS))):
        results += _stall(db, engine, dataset, kind=kind, rows=rows, rounds=rounds, quiet=quiet,
                          rng=rng, say=say)  # fmt: skip
    with uow(engine, readonly=True) as session:  # the night's check, the day's work after it
        checkpoint = audit.verify_chain(session, actor=admin, incremental=True)
    with uow(engine) as session:
        audit.record_verified(session, actor=admin, report=checkpoint)
    tubes = min(DAY_ACCESSIONS, free_positions(db, dataset.freezer) // 2)  # room left
    say(f"a day's work: a {DAY_IMPORT_ROWS:,}-row sheet, {tubes:,} accessions")
    with TemporaryDirectory() as folder:
        sheet = Path(folder) / "day.csv"
        _sheet(sheet, DAY_IMPORT_ROWS, rounds)  # after the stall rounds' own
        with uow(engine) as session:
            plan = legacy.check_inventory(session, actor=admin, path=sheet, study=STUDY)
            legacy.write_inventory(session, actor=admin, plan=plan)
    for _ in range(tubes):
        _accession(engine, dataset, rng)
    results.append(
        _incremental(db, engine, admin, since=checkpoint.through, rounds=rounds, tubes=tubes)
    )
    return results


def _accession(engine: Engine, dataset: Dataset, rng: random.Random) -> float:
    """Seconds one accession took at a terminal, committed (a refusal counts as its wait)."""
    start = time.perf_counter()
    try:
        with uow(engine) as session:
            accession_tube(session, actor=dataset.technician,
                           participant=rng.choice(dataset.participants),
                           destination=dataset.freezer)  # fmt: skip
    except BiobankError:  # SQLite's busy timeout ran out behind the import
        pass
    return time.perf_counter() - start


def _stall(
    db: BenchDatabase,
    engine: Engine,
    dataset: Dataset,
    *,
    kind: str,
    rows: int,
    rounds: int,
    quiet: int,
    rng: random.Random,
    say: Callable[[str], None],
) -> list[Result]:
    alone: list[float] = []
    during: list[float] = []
    imports: list[float] = []
    with TemporaryDirectory() as folder:
        for round_ in range(rounds):
            alone += [_accession(engine, dataset, rng) for _ in range(quiet)]
            given = Path(folder) / f"stall{round_}"
            if kind == "legacy":
                given = given.with_suffix(".csv")
                _sheet(given, rows, round_)
            else:
                _project(given, rows, round_)
            say(f"accessions during a {kind} import of {rows:,} rows, round {round_ + 1}")
            child = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.audit_bench", db.engine_name, db.url,
                 str(given)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert child.stdout is not None
            if child.stdout.readline().strip() != "begun":
                raise RuntimeError(f"the import did not begin:\n{child.communicate()[1]}")
            begun = time.perf_counter()
            while child.poll() is None:
                during.append(_accession(engine, dataset, rng))
            imports.append(time.perf_counter() - begun)
            if child.returncode != 0:
                raise RuntimeError(f"the import failed:\n{child.communicate()[1]}")
        alone += [_accession(engine, dataset, rng) for _ in range(quiet)]
    sqlite = db.engine_name == "sqlite"
    bound = (
        "SQLite has one writer: an accession waits for the import's whole unit of work, and "
        "is refused after the 10 s busy timeout"
        if sqlite
        else "the import's entries are written under no lock and sealed by one entry at commit"
    )
    what = "records-events" if kind == "REDCap" else "rows"
    how = (
        f"specimens.accession into the freezer, each committed, while a {kind} import of "
        f"{rows:,} {what} (check + write, one unit of work) runs in another process; {rounds} "
        "rounds, "
        f"imports took {median(imports):.1f} s (median); baseline: accessions with no import, "
        f"{quiet} before and after each round, measured in the same run (median "
        f"{median(alone) * 1000:.1f} ms, p99 {p99(alone) * 1000:.1f} ms); {bound}"
    )
    details = {"accessions_during": len(during), "accessions_alone": len(alone),
               "import_seconds": imports, "p99_alone": p99(alone)}  # fmt: skip
    return [
        Result(f"accession during a {kind} import", db.engine_name, "latency", median(during),
               p99(during), median(alone), None if sqlite else "p99 ≤ 100 ms",
               None if sqlite else p99(during) <= GOAL_STALL_P99, how, details),
    ]  # fmt: skip


def _sheet(path: Path, rows: int, round_: int) -> None:
    """The legacy benchmark's sheet, its subjects, tubes, freezer, racks and boxes new in each
    round."""
    write_sheet(path, rows)
    mark = f"S{round_:02d}"
    new = {"LEG": mark, "FRZ-01": f"STALL-{round_}", ",R": f",{mark}R", "BOX-": f"{mark}BOX-"}
    header, text = path.read_text().split("\n", 1)
    for old, made in new.items():
        text = text.replace(old, made)
    path.write_text(f"{header}\n{text}")


def _verify_whole(
    db: BenchDatabase, engine: Engine, admin: Actor, *, rounds: int, say: Callable[[str], None]
) -> list[Result]:
    service, raw = [], []
    for round_ in range(rounds):
        say(f"audit verify (whole) and raw hashing, round {round_ + 1}")
        start = time.perf_counter()
        with uow(engine, readonly=True) as session:
            entries = audit.verify_chain(session, actor=admin).entries
        service.append(entries / (time.perf_counter() - start))
        raw.append(_raw_hashing(db, after=0)[1])
    how = (
        f"audit.verify_chain over the whole chain ({entries:,} entries), {rounds} rounds "
        "interleaved with the baseline: the same rows read with the raw driver and each "
        "hashed in plain Python (json.dumps with sorted keys, SHA-256), no checks"
    )
    return [
        Result("audit verify (whole chain)", db.engine_name, "throughput", median(service),
               None, median(raw), f"≥ {GOAL_VERIFY_RATE:,}/s",
               median(service) >= GOAL_VERIFY_RATE, how, {"entries": entries}),
    ]  # fmt: skip


def _incremental(
    db: BenchDatabase, engine: Engine, admin: Actor, *, since: int, rounds: int, tubes: int
) -> Result:
    times, raw = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        with uow(engine, readonly=True) as session:
            report = audit.verify_chain(session, actor=admin, incremental=True)
        times.append(time.perf_counter() - start)
        raw.append(_raw_hashing(db, after=since)[0])
    how = (
        f"audit.verify_chain from the verified checkpoint appended before a busy day's work "
        f"(a {DAY_IMPORT_ROWS:,}-row sheet imported, {tubes:,} tubes accessioned one by "
        f"one): {report.checked:,} of {report.entries:,} entries walked; baseline: the raw "
        f"driver reading and hashing the entries after the checkpoint in plain Python, "
        f"{rounds} rounds interleaved"
    )
    return Result("audit verify after a day's work (incremental)", db.engine_name, "latency",
                  median(times), p99(times) if rounds > 1 else None, median(raw),
                  f"≤ {GOAL_INCREMENTAL:g} s", median(times) <= GOAL_INCREMENTAL, how,
                  {"checked": report.checked, "entries": report.entries})  # fmt: skip


def _raw_hashing(db: BenchDatabase, *, after: int) -> tuple[float, float]:
    """Seconds and entries a second for the raw driver to read the entries after id `after`
    and hash each as the chain does."""
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    query = db.sql(f"SELECT {names} FROM audit_entry WHERE id > ? ORDER BY id")
    count = 0
    with closing(db.connect()) as connection:
        start = time.perf_counter()
        cursor = connection.cursor(name="walk") if db.engine_name == "postgres" else None
        cursor = cursor or connection.cursor()
        cursor.execute(query, (after,))
        for row in cursor:
            fields = dict(zip(COLUMNS[:-1], row[:-1], strict=True))
            at = fields["occurred_at"]
            at = datetime.fromisoformat(at) if isinstance(at, str) else at
            fields["occurred_at"] = at.replace(tzinfo=at.tzinfo or UTC).isoformat()
            text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            hashlib.sha256(text.encode()).hexdigest()
            count += 1
        seconds = time.perf_counter() - start
    return seconds, count / seconds if seconds else 0.0


def _project(folder: Path, rows: int, round_: int) -> None:
    """The REDCap benchmark's project, each round's of other people than the last's: new
    record IDs and MRNs."""
    write_project(folder, rows, seed=round_ + 1, first=round_ * rows)


def _import(db: BenchDatabase, given: Path) -> None:
    """The import a terminal waits behind, in this process (a legacy sheet, or a REDCap
    project's folder): says "begun" once its unit of work has begun."""
    from biobank.db import make_engine
    from biobank.services.imports.redcap import check_redcap, redcap_mapping, write_redcap

    engine = make_engine(db.url)
    with uow(engine, readonly=True) as session:
        admin = actor_for(session, username="admin", workstation=WORKSTATION)
    with uow(engine) as session:
        session.connection()  # begun (on SQLite: the write lock taken)
        print("begun", flush=True)
        if given.is_dir():
            project = check_redcap(
                session, actor=admin, dictionary=given / "dictionary.csv",
                records=given / "records.csv", study=STUDY, mapping=redcap_mapping(),
            )  # fmt: skip
            if not project.writable:
                raise AssertionError(f"the project has {project.report.fault_count} faults")
            write_redcap(session, actor=admin, plan=project)
            return
        plan = legacy.check_inventory(session, actor=admin, path=given, study=STUDY)
        legacy.write_inventory(session, actor=admin, plan=plan)


if __name__ == "__main__":
    engine_name, url, path = sys.argv[1:]
    _import(BenchDatabase(engine_name, url), Path(path))
