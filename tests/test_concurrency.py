"""Several terminals at once: allocation never double-books a position, and a stale edit is
refused instead of silently overwriting a newer one.

The allocation tests start real OS processes (spawned, each with its own engine) against one
database, as bench terminals sharing an inventory do.
"""

import multiprocessing

import pytest
from concurrency_worker import Report, accession_tubes
from inventory import seed_inventory, serum
from sqlmodel import Session, func, select

from biobank.db import uow
from biobank.domain.positions import position_label
from biobank.errors import ConcurrentChange
from biobank.models import AuditEntry, Specimen, StorageUnit
from biobank.services import audit, custody, lineage
from biobank.services.identity import actor_for
from biobank.services.specimen_read import get_specimen, specimen_read

PROCESSES = {"sqlite": 4, "postgres": 8}  # SQLite queues its writers; PostgreSQL runs them at once
RESULT_TIMEOUT_S = 120


def _run_terminals(url: str, destination: str, *, processes: int, tubes: int) -> list[Report]:
    """Each process accessions `tubes` tubes into `destination`, all starting together."""
    context = multiprocessing.get_context("spawn")
    start, reports = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(
            target=accession_tubes, args=(index, url, destination, tubes, start, reports)
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        results = [reports.get(timeout=RESULT_TIMEOUT_S) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    failures = [r.failure for r in results if r.failure]
    assert not failures, "\n".join(failures)
    results.sort(key=lambda r: r.worker)
    print(f"retries per process: {[len(r.retries) for r in results]}")
    for retry in {message for r in results for message in r.retries}:
        print(f"  retried: {retry}")
    return results


def _check_free_slots(session: Session) -> None:
    occupied = dict(
        session.exec(
            select(Specimen.box_id, func.count())
            .where(Specimen.box_id.is_not(None))
            .group_by(Specimen.box_id)
        ).all()
    )
    for box in session.exec(select(StorageUnit).where(StorageUnit.holds_specimens)):
        expected = box.grid_rows * box.grid_cols - occupied.get(box.id, 0)
        assert box.free_slots == expected, f"{box.barcode} counts {box.free_slots} free"


def _check_inventory(engine, admin, reports: list[Report]) -> None:
    """Nothing double-booked, nothing lost, free-slot counts true, the audit chain intact."""
    placed = sorted(tube for r in reports for tube in r.placed)
    with uow(engine, readonly=True) as session:
        doubled = session.exec(
            select(Specimen.box_id, Specimen.position_row, Specimen.position_col, func.count())
            .where(Specimen.box_id.is_not(None))
            .group_by(Specimen.box_id, Specimen.position_row, Specimen.position_col)
            .having(func.count() > 1)
        ).all()
        assert doubled == []
        stored = sorted(
            (s.accession_id, box.barcode, _label(box, s))
            for s, box in session.exec(
                select(Specimen, StorageUnit).join(StorageUnit, Specimen.box_id == StorageUnit.id)
            )
        )
        assert stored == placed  # each committed tube is there, where its terminal was told
        assert len({accession for accession, _, _ in placed}) == len(placed)
        assert session.exec(select(func.count()).select_from(Specimen)).one() == len(placed)
        _check_free_slots(session)
        logged = session.exec(
            select(func.count()).where(AuditEntry.action == "specimen.accessioned")
        ).one()
        assert logged == len(placed)
        audit.verify_chain(session, actor=admin)


def _label(box: StorageUnit, specimen: Specimen) -> str:
    return position_label(
        specimen.position_row, specimen.position_col, cols=box.grid_cols, scheme=box.position_labels
    )


@pytest.mark.slow
def test_terminals_filling_a_freezer_at_once_never_collide(db_url, engine_name, engine, admin):
    tubes = 40
    layout = seed_inventory(engine, admin, box_grid=(9, 9), boxes_per_rack=2)  # 324 positions
    reports = _run_terminals(
        db_url, layout["freezer"], processes=PROCESSES[engine_name], tubes=tubes
    )
    refused = [len(r.refused) for r in reports]
    example = next((r.refused[0] for r in reports if r.refused), None)
    assert sum(refused) == 0, f"refused with room to spare, per process: {refused} ({example})"
    assert [len(r.placed) for r in reports] == [tubes] * len(reports)
    _check_inventory(engine, admin, reports)


@pytest.mark.slow
def test_terminals_filling_one_box_stop_at_its_capacity(db_url, engine_name, engine, admin):
    processes, tubes, capacity = PROCESSES[engine_name], 12, 36
    box = seed_inventory(engine, admin, box_grid=(6, 6))["boxes"][0]
    reports = _run_terminals(db_url, box, processes=processes, tubes=tubes)
    placed = [tube for r in reports for tube in r.placed]
    refused = [message for r in reports for message in r.refused]
    assert len(placed) == capacity
    assert {tube_box for _, tube_box, _ in placed} == {box}
    assert len(refused) == processes * tubes - capacity
    assert all(message == f"{box} has 0 free positions, 1 needed" for message in refused)
    _check_inventory(engine, admin, reports)


# --- Optimistic locking -------------------------------------------------------------------

# Edits a terminal makes to a stored tube; each takes `expected_version` too.
CHANGES = {
    "thaw": lambda session, actor, tube, boxes, **kw: custody.record_thaw(
        session, actor=actor, accession=tube, **kw
    ),
    "move": lambda session, actor, tube, boxes, **kw: custody.move(
        session, actor=actor, accession=tube, destination=boxes[1], **kw
    ),
    "check_out": lambda session, actor, tube, boxes, **kw: custody.check_out(
        session, actor=actor, accession=tube, **kw
    ),
    "deplete": lambda session, actor, tube, boxes, **kw: custody.deplete(
        session, actor=actor, accession=tube, **kw
    ),
    "dispose": lambda session, actor, tube, boxes, **kw: custody.dispose(
        session, actor=actor, accession=tube, reason="cracked tube", **kw
    ),
    "aliquot": lambda session, actor, tube, boxes, **kw: lineage.aliquot(
        session, actor=actor, parent=tube, count=2, volume=100, **kw
    ),
}


@pytest.fixture
def boxes(engine, admin) -> list[str]:
    return seed_inventory(engine, admin)["boxes"]


@pytest.fixture
def tube(engine, admin, boxes) -> str:
    with uow(engine) as session:
        return serum(session, admin, destination=boxes[0]).accession_id


def _state(engine, tube: str) -> tuple:
    with uow(engine, readonly=True) as session:
        read = specimen_read(session, get_specimen(session, tube))
    return read.version, read.freeze_thaw_count, read.box_barcode, read.status


@pytest.mark.parametrize(("first", "second"), [("thaw", "move"), ("move", "thaw")])
def test_a_stale_write_is_refused_not_lost(engine, admin, boxes, tube, first, second):
    with Session(engine, expire_on_commit=False) as stale:  # a terminal showing what it read
        with stale.begin():
            shown = get_specimen(stale, tube)  # held: the session's identity map is weak
        with uow(engine) as session:
            CHANGES[first](session, admin, tube, boxes)
        after_first = _state(engine, tube)
        with pytest.raises(ConcurrentChange) as caught, stale.begin():
            assert shown.version < after_first[0]
            CHANGES[second](stale, admin, tube, boxes)
    assert caught.value.field == "version"
    assert _state(engine, tube) == after_first
    with uow(engine, readonly=True) as session:
        _check_free_slots(session)
    with uow(engine) as session:  # reloaded, the second edit goes through on top of the first
        CHANGES[second](session, admin, tube, boxes)
    assert _state(engine, tube)[1:] == (1, boxes[1], "available")


def test_a_stale_write_in_an_open_transaction_is_refused(pg_engine):
    with uow(pg_engine) as session:
        admin = actor_for(session, username="admin", workstation="test-bench")
    boxes = seed_inventory(pg_engine, admin)["boxes"]
    with uow(pg_engine) as session:
        tube = serum(session, admin, destination=boxes[0]).accession_id
    with pytest.raises(ConcurrentChange), uow(pg_engine) as second:
        shown = get_specimen(second, tube)  # as a service holds the row it loaded
        with uow(pg_engine) as first:
            custody.record_thaw(first, actor=admin, accession=tube)
        assert shown.freeze_thaw_count == 0
        custody.move(second, actor=admin, accession=tube, destination=boxes[1])
    assert _state(pg_engine, tube)[1:] == (1, boxes[0], "available")


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_expected_version_refuses_a_stale_version(engine, admin, boxes, tube, change):
    with uow(engine, readonly=True) as session:
        shown = get_specimen(session, tube).version
    with uow(engine) as session:
        current = custody.record_thaw(session, actor=admin, accession=tube).version
    before = _state(engine, tube)
    with pytest.raises(ConcurrentChange) as caught, uow(engine) as session:
        CHANGES[change](session, admin, tube, boxes, expected_version=shown)
    assert caught.value.field == "version"
    assert _state(engine, tube) == before
    with uow(engine) as session:
        CHANGES[change](session, admin, tube, boxes, expected_version=current)
    assert _state(engine, tube)[0] > current
