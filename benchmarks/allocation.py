"""Auto-allocation in a freezer of thousands of boxes, the first free position deep inside.

Timed: `slots.find_slots` for one serum tube below the freezer (the allocation itself, in
a unit of work that is rolled back), and a whole `specimens.accession` into the freezer in its
own unit of work (committed). Baseline: the raw SQL that finds the first box with room, in
physical order, on a reused cursor, run after each allocation and each accession (the two take
turns, so the machine's load weighs on both alike).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import closing

from sqlalchemy.engine import Engine

from benchmarks.databases import BenchDatabase
from benchmarks.dataset import Dataset, accession_tube
from benchmarks.measure import Result, median, p99
from biobank.db import uow
from biobank.services.slots import find_slots
from biobank.services.storage import get_unit, subtree_range

GOAL_SECONDS = 0.015
WARMUP = 10
RAW = (
    "SELECT id FROM storage_unit WHERE free_slots > 0 AND sort_key >= ? AND sort_key < ? "
    "AND holds_specimens AND active ORDER BY sort_key LIMIT 1"
)


def run(
    db: BenchDatabase,
    engine: Engine,
    dataset: Dataset,
    *,
    allocations: int,
    accessions: int,
    rng: random.Random,
) -> list[Result]:
    with uow(engine, readonly=True) as session:
        low, high = subtree_range(get_unit(session, dataset.freezer))
    lock = " FOR UPDATE SKIP LOCKED" if db.engine_name == "postgres" else ""

    boxes: list[str] = []

    def allocate() -> float:
        """Seconds find_slots took (loading the freezer row is not counted); the box noted."""
        with uow(engine, readonly=True) as session:
            freezer = get_unit(session, dataset.freezer)
            start = time.perf_counter()
            (slot,) = find_slots(session, target=freezer, specimen_type="SER", count=1)
            seconds = time.perf_counter() - start
            boxes.append(slot.box.path)
        return seconds

    def accession() -> float:
        start = time.perf_counter()
        with uow(engine) as session:
            tube = accession_tube(
                session,
                actor=dataset.technician,
                participant=rng.choice(dataset.participants),
                destination=dataset.freezer,
            )
        if tube.box_barcode is None:
            raise AssertionError(f"{tube.accession_id} was not placed")
        return time.perf_counter() - start

    with closing(db.connect()) as connection:
        first_box = _raw(db, connection, RAW + lock, (low, high))
        allocation, raw_allocation = _in_turns(allocate, first_box, allocations)
        full, raw_accession = _in_turns(accession, first_box, accessions)
    baseline = (
        f"baseline: raw {db.engine_name} driver, SELECT of the first box with free_slots > 0 "
        f"in sort_key order below the freezer{lock}, on a reused cursor, after each"
    )
    where = f"the first box with room is box {dataset.first_free_box:,} of {dataset.boxes:,}"
    return [
        _result(
            db,
            "allocation in freezer (find_slots)",
            allocation,
            raw_allocation,
            f"find_slots for one SER tube below the freezer, {allocations:,} times, each in a "
            f"unit of work rolled back after; {where} ({boxes[-1]}); {baseline}",
        ),
        _result(
            db,
            "accession into freezer (full)",
            full,
            raw_accession,
            f"specimens.accession with destination=freezer, {accessions:,} tubes, each in its "
            f"own committed unit of work; {baseline}",
        ),
    ]


def _result(db: BenchDatabase, name: str, times: list[float], raw: list[float], how: str):
    return Result(
        benchmark=name,
        engine=db.engine_name,
        kind="latency",
        median=median(times),
        p99=p99(times),
        baseline=median(raw),
        goal=f"≤ {GOAL_SECONDS * 1000:g} ms",
        passed=median(times) <= GOAL_SECONDS,
        how=how,
        details={"runs": len(times), "baseline_p99": p99(raw)},
    )


def _in_turns(
    timed: Callable[[], float], baseline: Callable[[], float], runs: int
) -> tuple[list[float], list[float]]:
    """`runs` of `timed`, each followed by `baseline`, both reporting their own seconds; the
    first WARMUP of each are run but not counted."""
    times: list[float] = []
    raw: list[float] = []
    for n in range(runs + WARMUP):
        seconds, raw_seconds = timed(), baseline()
        if n >= WARMUP:
            times.append(seconds)
            raw.append(raw_seconds)
    return times, raw


def _raw(db: BenchDatabase, connection, query: str, params: tuple) -> Callable[[], float]:
    """The baseline: seconds the raw query takes on `connection`, each time it is called."""
    query = db.sql(query)
    cursor = connection.cursor()
    options = {"prepare": True} if db.engine_name == "postgres" else {}

    def first_box() -> float:
        started = time.perf_counter()
        cursor.execute(query, params, **options)
        if cursor.fetchone() is None:
            raise AssertionError("raw allocation found no box with room")
        connection.rollback()
        return time.perf_counter() - started

    return first_box
