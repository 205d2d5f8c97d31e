"""Placement, allocation and custody: each step an event and an audit entry, free-slot
counts kept right, the lifecycle enforced."""

import pytest
import sqlalchemy as sa
from inventory import seed_inventory, serum
from sqlalchemy.dialects import postgresql

from biobank.db import uow
from biobank.domain.lifecycle import ALLOWED
from biobank.domain.vocabulary import SpecimenStatus
from biobank.errors import ConcurrentChange, InvalidTransition, PositionOccupied, ValidationError
from biobank.services import custody, lineage, slots, specimens, storage


def _free(engine, barcode: str) -> int:
    with uow(engine, readonly=True) as session:
        unit = storage.get_unit(session, barcode)
        occupied = session.execute(
            sa.text("SELECT count(*) FROM specimen WHERE box_id = :b"), {"b": unit.id}
        ).scalar_one()
        assert unit.free_slots == unit.grid_rows * unit.grid_cols - occupied
        return unit.free_slots


def test_auto_allocation_fills_boxes_in_order_and_keeps_sets_together(engine, admin):
    layout = seed_inventory(engine, admin, box_grid=(2, 3))
    first, second = layout["boxes"][:2]
    with uow(engine) as session:
        tubes = [serum(session, admin, destination=layout["freezer"]) for _ in range(4)]
    assert [(t.box_barcode, t.position) for t in tubes] == [
        (first, "A1"), (first, "A2"), (first, "A3"), (first, "B1"),
    ]  # fmt: skip
    with uow(engine) as session:
        parent = serum(session, admin, quantity=5000)
        kept = lineage.aliquot(
            session,
            actor=admin,
            parent=parent.accession_id,
            count=4,
            volume=100,
            destination=layout["freezer"],
        )
    # the first box has 2 free, so the set of 4 goes whole into the next box
    assert {t.box_barcode for t in kept} == {second}
    with uow(engine) as session:
        spread = lineage.aliquot(
            session,
            actor=admin,
            parent=parent.accession_id,
            count=7,
            volume=100,
            destination=layout["freezer"],
        )
    # no box has room for 7: they fill the free positions in physical order
    assert [t.box_barcode for t in spread[:2]] == [first, first]
    assert _free(engine, first) == 0 and _free(engine, second) == 0


def test_the_search_for_room_uses_the_index_of_boxes_with_room(engine, admin):
    """Also once a statement is prepared: PostgreSQL plans a statement run often once, for
    any parameters, and that generic plan can use the partial index only if its condition
    (`free_slots > 0`) is written in the SQL, not bound (it walked every full box before)."""
    layout = seed_inventory(engine, admin)
    searches = []

    def keep(state):  # the search for a box with room: the query that locks what it finds
        if state.is_select and "FOR UPDATE" in str(state.statement):
            searches.append(state.statement)

    with uow(engine, readonly=True) as session:
        sa.event.listen(session, "do_orm_execute", keep)
        freezer = storage.get_unit(session, layout["freezer"])
        slots.find_slots(session, target=freezer, specimen_type="SER")
        (search,) = searches
        dialect = session.get_bind().dialect
        if dialect.name == "sqlite":
            compiled = search.compile(dialect=dialect)
            params = [compiled.params[name] for name in compiled.positiontup]
            plan = session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + str(compiled).replace(" FOR UPDATE", ""), tuple(params)
            )
        else:
            import psycopg.sql

            numbered = postgresql.psycopg.dialect(paramstyle="numeric_dollar")
            compiled = search.compile(dialect=numbered)
            values = [compiled.params[name] for name in compiled.positiontup]
            connection = session.connection()
            connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            connection.exec_driver_sql(f"PREPARE search AS {compiled}")
            driver = connection.connection.driver_connection
            arguments = ", ".join(psycopg.sql.Literal(v).as_string(driver) for v in values)
            plan = connection.exec_driver_sql(f"EXPLAIN EXECUTE search({arguments})")
        assert "ix_storage_unit_free_boxes" in " ".join(str(row) for row in plan)


def test_place_at_a_position_and_refusals(engine, admin):
    layout = seed_inventory(engine, admin)
    box = layout["boxes"][0]
    with uow(engine) as session:
        tube = serum(session, admin, destination=box, position="E5")
        other = serum(session, admin)
    assert tube.position == "E5"
    with pytest.raises(PositionOccupied, match=f"{box} E5 is occupied by {tube.accession_id}"):
        with uow(engine) as session:
            custody.move(
                session, actor=admin, accession=other.accession_id, destination=box, position="e5"
            )
    with pytest.raises(ValidationError, match="outside the 9x9 grid"):
        with uow(engine) as session:
            custody.move(
                session, actor=admin, accession=other.accession_id, destination=box, position="J1"
            )
    with uow(engine) as session:
        storage.add_unit(
            session,
            actor=admin,
            kind="box",
            name="PBMC only",
            grid=(2, 2),
            barcode="PBMC-1",
            allowed_types=["CEL"],
        )
    with pytest.raises(ValidationError, match="takes only CEL, not SER"):
        with uow(engine) as session:
            custody.move(session, actor=admin, accession=other.accession_id, destination="PBMC-1")
    with uow(engine) as session:
        full = storage.add_unit(session, actor=admin, kind="box", name="tiny", grid=(1, 1))
        serum(session, admin, destination=full.barcode)
    with pytest.raises(PositionOccupied, match="0 free positions, 1 needed"):
        with uow(engine) as session:
            custody.move(
                session, actor=admin, accession=other.accession_id, destination=full.barcode
            )
    assert _free(engine, box) == 80


def test_move_check_out_in_thaw_deplete_dispose(engine, admin):
    layout = seed_inventory(engine, admin)
    first, second = layout["boxes"][:2]
    with uow(engine) as session:
        tube = serum(session, admin, destination=first, position="A1").accession_id
    steps = [
        (custody.move, {"destination": second, "position": "B2", "reason": "reorganised"}),
        (custody.check_out, {"reason": "ELISA"}),
        (custody.check_in, {}),
        (custody.record_thaw, {}),
        (custody.deplete, {}),
        (custody.dispose, {"reason": "empty"}),
    ]
    for step, kwargs in steps:
        with uow(engine) as session:
            read = step(session, actor=admin, accession=tube, **kwargs)
        if step is custody.check_out:
            assert (read.status, read.position) == ("checked_out", "B2")  # the slot is held
            assert _free(engine, second) == 80
    assert (read.status, read.box_barcode, read.freeze_thaw_count, read.quantity) == (
        "disposed", None, 1, 0,
    )  # fmt: skip
    assert _free(engine, first) == 81 and _free(engine, second) == 81
    with uow(engine) as session:
        events = specimens.show_specimen(session, actor=admin, accession=tube).events
    assert [e.event_type for e in events] == [
        "accessioned", "moved", "checked_out", "checked_in", "thawed", "depleted", "disposed",
    ]  # fmt: skip
    moved = events[1]
    assert (moved.from_location, moved.to_location, moved.reason) == (
        f"{first} A1", f"{second} B2", "reorganised",
    )  # fmt: skip
    with engine.connect() as connection:
        actions = (
            connection.execute(
                sa.text("SELECT action FROM audit_entry WHERE entity = 'specimen' ORDER BY id")
            )
            .scalars()
            .all()
        )
    assert actions == [
        "specimen.accessioned", "specimen.move", "specimen.check_out", "specimen.check_in",
        "specimen.thaw", "specimen.deplete", "specimen.dispose",
    ]  # fmt: skip


def test_illegal_transitions_name_both_states(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = serum(session, admin).accession_id
        custody.dispose(session, actor=admin, accession=tube, reason="contaminated")
    with pytest.raises(InvalidTransition, match="is disposed and cannot become checked_out"):
        with uow(engine) as session:
            custody.check_out(session, actor=admin, accession=tube)
    with pytest.raises(ValidationError, match="needs a reason"), uow(engine) as session:
        custody.dispose(session, actor=admin, accession=tube, reason=" ")


def test_lifecycle_table_is_complete_and_final_states_are_final():
    assert set(ALLOWED) == set(SpecimenStatus)
    assert ALLOWED[SpecimenStatus.disposed] == frozenset()
    assert ALLOWED[SpecimenStatus.distributed] == frozenset()


def test_thaw_warns_past_the_type_limit(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = serum(session, admin).accession_id
    for count in range(1, 5):
        with uow(engine) as session:
            read = custody.record_thaw(session, actor=admin, accession=tube)
        assert bool(read.warnings) == (count > 3)
    assert "thawed 4 times" in read.warnings[0]


def test_stale_versions_are_refused(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = serum(session, admin)
    with uow(engine) as session:
        custody.record_thaw(session, actor=admin, accession=tube.accession_id)
    with pytest.raises(ConcurrentChange, match="changed at another terminal"):
        with uow(engine) as session:
            custody.record_thaw(
                session,
                actor=admin,
                accession=tube.accession_id,
                expected_version=tube.version,
            )
