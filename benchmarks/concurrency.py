"""Several terminals accessioning into one freezer at once, each tube placed automatically.

Eight processes on PostgreSQL (four on SQLite) start together; each accessions its share of
serum tubes with `destination=<freezer>`, one unit of work per tube, and retries what another
terminal can cause (a refused constraint, a stale row, a busy database). Reported: placements
per second over the whole run, the p99 of one placement, retries by cause, and afterwards a
check that no position is double-booked and every box's free count is true; and, in a row of
its own, the client CPU a placement costs: each placing process's CPU time
(`time.process_time`) while it places, summed and divided by the placements. On PostgreSQL the
goal is met by either figure: 500 placements a second, or client CPU per placement at most 3
times the raw driver's (the rate is bound by the machine's cores when terminals and server
share it; the CPU a placement costs is what the software decides).

Baseline: the same processes writing the same rows (specimen, free count, custody event,
chained audit entry) with the raw driver, under the same locks (`FOR UPDATE SKIP LOCKED` on the
box and the audit advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite). Service and
baseline take turns over two rounds, each placing half the tubes, the second round starting
with the other than the first, so the machine's load weighs on both alike.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import event

from benchmarks import dataset as data
from benchmarks.databases import BenchDatabase
from benchmarks.measure import Result, interleaved, p99, progress
from benchmarks.raw import RawInsert
from biobank.db import make_engine, uow
from biobank.domain.identifiers import format_specimen_id
from biobank.domain.permissions import Actor
from biobank.domain.positions import fill_sequence
from biobank.errors import (
    ConcurrentChange,
    ConstraintViolation,
    DatabaseUnavailable,
    PositionOccupied,
)
from biobank.models import AuditEntry, Specimen, SpecimenEvent, StorageUnit, utcnow
from biobank.services import audit
from biobank.services.specimen_ids import COUNTER
from biobank.services.storage import subtree_range

PROCESSES = {"postgres": 8, "sqlite": 4}
GOAL_PER_SECOND = {"postgres": 500.0}  # SQLite is reported without a goal
GOAL_CPU_TIMES_RAW = {"postgres": 3.0}  # client CPU per placement, against the raw driver's
MAX_PER_PROCESS = 200
PARTICIPANTS = 500
ATTEMPTS = 20
ROUNDS = 2
START_TIMEOUT_S = 300


@dataclass(frozen=True)
class Job:
    worker: int
    db: BenchDatabase
    freezer: str
    participants: tuple[str, ...]
    count: int
    actor: Actor


@dataclass
class Report:
    worker: int
    start: float = 0.0
    end: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds while placing
    server_cpu: float | None = None  # its server processes' (PostgreSQL on this machine)
    latencies: list[float] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    failure: str | None = None


def run(db: BenchDatabase, dataset: data.Dataset, *, rng: random.Random) -> list[Result]:
    processes = PROCESSES[db.engine_name]
    # Both runs (with a warm-up placement each) use at most two thirds of the room left, so
    # that there stay more boxes with room than processes locking one each.
    room = free_positions(db, dataset.freezer) // (3 * processes) - 1
    per_process = max(1, min(MAX_PER_PROCESS, room) // ROUNDS)
    participants = tuple(
        rng.sample(dataset.participants, min(PARTICIPANTS, len(dataset.participants)))
    )
    jobs = [
        Job(n, db, dataset.freezer, participants, per_process, dataset.technician)
        for n in range(processes)
    ]
    workers = {"service": service_worker, "raw driver": raw_worker}
    rounds: dict[str, list[list[Report]]] = {name: [] for name in workers}
    for n, order in enumerate(interleaved(ROUNDS, *workers)):
        for name in order:
            progress(
                f"[{db.engine_name}] {processes} processes x {per_process} placements: {name}, "
                f"round {n + 1} of {ROUNDS}"
            )
            rounds[name].append(_run(workers[name], jobs))
    service = [report for reports in rounds["service"] for report in reports]
    raw = [report for reports in rounds["raw driver"] for report in reports]
    problems = integrity_problems(db)
    rate, cpu, raw_cpu = _rate(rounds["service"]), _cpu_ms(service), _cpu_ms(raw)
    goal, passed = _goal(db.engine_name, rate=rate, cpu_times_raw=cpu / raw_cpu)
    latencies = [t for r in service for t in r.latencies]
    retries = sum((r.retries for r in service), Counter())
    details = {
        "processes": processes,
        "placements": len(latencies),
        "retries": dict(retries),
        "baseline_retries": dict(sum((r.retries for r in raw), Counter())),
        "baseline_p99": p99([t for r in raw for t in r.latencies]),
        "client_cpu_ms_per_placement": cpu,
        "baseline_client_cpu_ms_per_placement": raw_cpu,
        "server_cpu_ms_per_placement": _server_cpu_ms(service),
        "baseline_server_cpu_ms_per_placement": _server_cpu_ms(raw),
        "cores": os.cpu_count(),
        "integrity_problems": problems,
    }
    passed = False if problems else passed
    work = (
        f"{processes} processes, each accessioning {per_process} serum tubes with "
        f"destination=freezer in each of {ROUNDS} rounds, one committed unit of work per tube, "
        "retrying conflicts"
    )
    return [
        Result(
            benchmark=f"{processes} processes placing",
            engine=db.engine_name,
            kind="throughput",
            median=rate,
            p99=p99(latencies),
            baseline=_rate(rounds["raw driver"]),
            goal=goal,
            passed=passed,
            how=f"{work}; placements/s over the rounds, p99 of one placement (with its "
            "retries); baseline: the same writes and locks with the raw driver, the two taking "
            "turns",
            details=details,
        ),
        Result(
            benchmark=f"{processes} processes placing (client CPU)",
            engine=db.engine_name,
            kind="latency",
            median=cpu / 1000,
            p99=None,
            baseline=raw_cpu / 1000,
            goal=goal,
            passed=passed,
            how=f"{work}; the placing processes' CPU time while placing (time.process_time) "
            "over the placements; baseline: the raw driver's processes' alike",
            details=details,
        ),
    ]


def _goal(engine_name: str, *, rate: float, cpu_times_raw: float) -> tuple[str | None, bool | None]:
    """The goal (none on SQLite) and whether it is met: by the rate, or by the client CPU a
    placement costs against the raw driver's, whichever is reached."""
    per_second, times_raw = GOAL_PER_SECOND.get(engine_name), GOAL_CPU_TIMES_RAW.get(engine_name)
    if per_second is None or times_raw is None:
        return None, None
    goal = f"≥ {per_second:g}/s or client CPU ≤ {times_raw:g}× raw"
    return goal, rate >= per_second or cpu_times_raw <= times_raw


def free_positions(db: BenchDatabase, freezer: str) -> int:
    with closing(db.connect()) as connection:
        low, high = _freezer_range(db, connection, freezer)
        query = "SELECT sum(free_slots) FROM storage_unit WHERE sort_key >= ? AND sort_key < ?"
        return connection.cursor().execute(db.sql(query), (low, high)).fetchone()[0]


def integrity_problems(db: BenchDatabase) -> list[str]:
    """Double-booked positions and boxes whose free count is not the truth."""
    doubled = (
        "SELECT box_id, position_row, position_col, count(*) FROM specimen "
        "WHERE box_id IS NOT NULL GROUP BY box_id, position_row, position_col "
        "HAVING count(*) > 1"
    )
    miscounted = (
        "SELECT u.barcode, u.free_slots, u.grid_rows * u.grid_cols - count(s.id) "
        "FROM storage_unit u LEFT JOIN specimen s ON s.box_id = u.id WHERE u.holds_specimens "
        "GROUP BY u.id, u.barcode, u.free_slots, u.grid_rows, u.grid_cols "
        "HAVING u.free_slots <> u.grid_rows * u.grid_cols - count(s.id)"
    )
    with closing(db.connect()) as connection:
        cursor = connection.cursor()
        problems = [
            f"box {box} position ({row}, {col}) holds {n} tubes"
            for box, row, col, n in cursor.execute(doubled).fetchall()
        ]
        problems += [
            f"{barcode} counts {counted} free positions, {truth} are free"
            for barcode, counted, truth in cursor.execute(miscounted).fetchall()
        ]
    return problems


def _rate(rounds: list[list[Report]]) -> float:
    """Placements a second over the rounds, each from its first start to its last end."""
    placed = sum(len(r.latencies) for reports in rounds for r in reports)
    spans = (max(r.end for r in reports) - min(r.start for r in reports) for reports in rounds)
    return placed / sum(spans)


def _cpu_ms(reports: list[Report]) -> float:
    """CPU the placing processes spent per placement: with the database's own CPU, what
    bounds the rate on a machine with few cores."""
    return 1000 * sum(r.cpu for r in reports) / sum(len(r.latencies) for r in reports)


def _server_cpu_ms(reports: list[Report]) -> float | None:
    """CPU the server's processes serving them spent per placement (None when the server is
    not on this machine): what bounds the rate when each terminal is a computer of its own."""
    if any(r.server_cpu is None for r in reports):
        return None
    return 1000 * sum(r.server_cpu for r in reports) / sum(len(r.latencies) for r in reports)


def _run(target: Callable, jobs: list[Job]) -> list[Report]:
    """Start one spawned process per job; they begin placing together."""
    context = multiprocessing.get_context("spawn")
    start, reports = context.Barrier(len(jobs)), context.Queue()
    workers = [context.Process(target=target, args=(job, start, reports)) for job in jobs]
    for worker in workers:
        worker.start()
    try:
        results = [reports.get(timeout=START_TIMEOUT_S + 600) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    failures = [r.failure for r in results if r.failure]
    if failures:
        raise RuntimeError("a placing process failed:\n" + "\n".join(failures))
    return results


def _place_all(
    job: Job,
    report: Report,
    place: Callable[[str], None],
    retryable,
    start,
    backends: Callable[[], set[int]] = set,
) -> None:
    """Place `job.count` tubes, timing each; `backends` names the server processes serving
    this one (PostgreSQL's backend pids), whose CPU is counted too."""
    rng = random.Random(job.worker)
    place(rng.choice(job.participants))  # warm: statements compiled, caches filled
    start.wait(timeout=START_TIMEOUT_S)
    report.start, cpu = time.monotonic(), time.process_time()
    server_cpu = {pid: _cpu_of(pid) for pid in backends()}
    for _ in range(job.count):
        began = time.perf_counter()
        for _attempt in range(ATTEMPTS):
            try:
                place(rng.choice(job.participants))
                break
            except retryable as error:
                report.retries[type(error).__name__] += 1
        else:
            raise RuntimeError(f"gave up after {ATTEMPTS} attempts: {dict(report.retries)}")
        report.latencies.append(time.perf_counter() - began)
    report.end, report.cpu = time.monotonic(), time.process_time() - cpu
    used = {pid: _cpu_of(pid) for pid in backends()}
    if used and None not in used.values():  # a server on this machine, its /proc readable
        report.server_cpu = sum(t - (server_cpu.get(pid) or 0.0) for pid, t in used.items())


def _cpu_of(pid: int) -> float | None:
    """CPU seconds PostgreSQL's process `pid` has used (None when it is not on this machine,
    as with a server in a container, whose pids are its own, or is gone)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def service_worker(job: Job, start, reports) -> None:
    """One terminal: `specimens.accession` into the freezer, a unit of work per tube."""
    report = Report(job.worker)
    try:
        engine = make_engine(job.db.url)
        pids: set[int] = set()
        if job.db.engine_name == "postgres":

            @event.listens_for(engine, "connect")
            def _backend(dbapi_connection, _record) -> None:
                pids.add(dbapi_connection.info.backend_pid)

        def place(participant: str) -> None:
            with uow(engine) as session:
                data.accession_tube(
                    session, actor=job.actor, participant=participant, destination=job.freezer
                )

        # PositionOccupied: every box with room was locked by other terminals (SKIP LOCKED).
        retryable = (ConstraintViolation, ConcurrentChange, DatabaseUnavailable, PositionOccupied)
        _place_all(job, report, place, retryable, start, backends=lambda: pids)
        engine.dispose()
    except Exception:
        report.failure = traceback.format_exc()
    reports.put(report)


def raw_worker(job: Job, start, reports) -> None:
    """The same writes with the raw driver: the baseline."""
    report = Report(job.worker)
    try:
        with closing(job.db.connect()) as connection:
            placer = _RawPlacer(job, connection)
            driver = job.db.driver()
            retryable = (driver.IntegrityError, driver.OperationalError, AllBoxesLocked)
            postgres = job.db.engine_name == "postgres"
            pids = {connection.info.backend_pid} if postgres else set()
            _place_all(job, report, placer.place, retryable, start, backends=lambda: pids)
    except Exception:
        report.failure = traceback.format_exc()
    reports.put(report)


def _freezer_range(db: BenchDatabase, connection, barcode: str) -> tuple[str, str]:
    query = db.sql("SELECT sort_key FROM storage_unit WHERE barcode = ?")
    (sort_key,) = connection.cursor().execute(query, (barcode,)).fetchone()
    return subtree_range(StorageUnit(sort_key=sort_key))


class AllBoxesLocked(Exception):
    """No box with room that another process has not locked (or none at all)."""


class _RawPlacer:
    """One accession with automatic placement, written by hand: what the service writes,
    without the library."""

    def __init__(self, job: Job, connection):
        self.db, self.actor, self.connection = job.db, job.actor, connection
        self.postgres = job.db.engine_name == "postgres"
        self.cursor = connection.cursor()
        self.low, self.high = _freezer_range(job.db, connection, job.freezer)
        connection.rollback()
        self.specimen = RawInsert(job.db, Specimen.__table__, returning=True)
        self.event = RawInsert(job.db, SpecimenEvent.__table__)
        self.audit = RawInsert(job.db, AuditEntry.__table__)

    def execute(self, query: str, params: tuple = ()):
        return self.cursor.execute(self.db.sql(query), params)

    def place(self, participant: str) -> None:
        try:
            self._place(participant)
            self.connection.commit()
        except BaseException:
            self.connection.rollback()
            raise

    def _place(self, participant: str) -> None:
        if not self.postgres:
            self.execute("BEGIN IMMEDIATE")
        participant_id, visit_id = self.execute(
            "SELECT p.id, v.id FROM participant p JOIN visit v ON v.participant_id = p.id "
            "WHERE p.code = ? AND v.label = 'baseline'",
            (participant,),
        ).fetchone()
        lock = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
        box = self.execute(
            "SELECT id, grid_rows, grid_cols, fill_order FROM storage_unit "
            "WHERE free_slots > 0 AND sort_key >= ? AND sort_key < ? AND holds_specimens "
            f"AND active ORDER BY sort_key LIMIT 1{lock}",
            (self.low, self.high),
        ).fetchone()
        if box is None:
            raise AllBoxesLocked
        box_id, rows, cols, order = box
        taken = set(
            self.execute(
                "SELECT position_row, position_col FROM specimen WHERE box_id = ?", (box_id,)
            ).fetchall()
        )
        row, col = next(p for p in fill_sequence(rows, cols, order) if p not in taken)
        now = utcnow()
        specimen = data.specimen_row(
            accession_id=self._accession_id(),
            participant_id=participant_id,
            visit_id=visit_id,
            specimen_type="SER",
            collected_at=now - timedelta(hours=3),
            received_at=now,
            location=(box_id, row, col),
        )
        (specimen_id,) = self.execute(self.specimen.sql, self.specimen.params(specimen)).fetchone()
        self.execute("UPDATE storage_unit SET free_slots = free_slots - 1 WHERE id = ?", (box_id,))
        event = data.event_row(specimen_id, specimen, self.actor)
        self.execute(self.event.sql, self.event.params(event))
        if self.postgres:
            self.execute("SELECT pg_advisory_xact_lock(?)", (audit._ADVISORY_LOCK_KEY,))
        tail = self.execute("SELECT hash FROM audit_entry ORDER BY id DESC LIMIT 1").fetchone()
        entry = SimpleNamespace(
            occurred_at=now,
            actor=self.actor.username,
            workstation=self.actor.workstation,
            action="specimen.accessioned",
            entity="specimen",
            entity_id=str(specimen_id),
            before=None,
            after=audit.canonical_json(specimen | {"id": specimen_id}),
            reason=None,
            prev_hash=tail[0] if tail else audit.GENESIS_HASH,
        )
        entry.hash = audit.entry_hash(entry)
        self.execute(self.audit.sql, self.audit.params(vars(entry)))

    def _accession_id(self) -> str:
        while True:
            if self.postgres:
                (serial,) = self.execute("SELECT nextval('specimen_serial')").fetchone()
            else:
                (after,) = self.execute(
                    "UPDATE serial_counter SET next_value = next_value + 1 WHERE name = ? "
                    "RETURNING next_value",
                    (COUNTER,),
                ).fetchone()
                serial = after - 1
            accession = format_specimen_id(data.STUDY, serial)
            if accession is not None:
                return accession
