"""The database layer: engine settings, the unit of work, and constraints the database
enforces on its own (a double-booked position is impossible)."""

import sqlite3

import pytest
import sqlalchemy as sa
from sqlmodel import select

from biobank.db import make_engine, uow
from biobank.errors import ConstraintViolation
from biobank.models import Participant, Specimen, StorageUnit, Study


def test_sqlite_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 10_000
    engine.dispose()


def test_sqlite_write_transactions_begin_immediately(tmp_path):
    """A unit of work holds the write lock from its first statement, so a second writer
    waits at BEGIN instead of failing half-way through its change."""
    path = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with uow(engine) as session:
        session.exec(select(sa.literal(1))).one()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    with uow(engine, readonly=True) as session:
        session.exec(select(sa.literal(1))).one()
        other.execute("BEGIN IMMEDIATE")  # a reader does not block writers
        other.execute("ROLLBACK")
    other.close()
    engine.dispose()


def _box_with_specimen(session):
    study = Study(code="SLE", title="t", id_prefix="SLE")
    session.add(study)
    session.flush()
    participant = Participant(study_id=study.id, code="SLE-0001")
    box = StorageUnit(kind="box", name="Box 1", barcode="BOX-1", grid_rows=9, grid_cols=9)
    session.add_all([participant, box])
    session.flush()
    return participant, box


def _tube(participant, box, accession, row, col):
    return Specimen(
        accession_id=accession,
        participant_id=participant.id,
        kind="primary",
        specimen_type="SER",
        initial_quantity=500,
        quantity=500,
        unit="uL",
        box_id=box.id,
        position_row=row,
        position_col=col,
    )


def test_a_slot_cannot_be_double_booked(engine):
    with uow(engine) as session:
        participant, box = _box_with_specimen(session)
        session.add(_tube(participant, box, "SLE-A", 1, 1))
    with pytest.raises(ConstraintViolation, match="uq_specimen_box_id_position_row_position_col"):
        with uow(engine) as session:
            session.add(_tube(participant, box, "SLE-B", 1, 1))
    with uow(engine) as session:
        assert len(session.exec(select(Specimen)).all()) == 1


def test_a_unit_position_cannot_be_double_booked(engine):
    with uow(engine) as session:
        rack = StorageUnit(kind="rack", name="Rack 1", barcode="R-1", grid_rows=4, grid_cols=3)
        session.add(rack)
        session.flush()
        session.add(
            StorageUnit(
                kind="box",
                name="A",
                barcode="B-A",
                parent_id=rack.id,
                position_row=1,
                position_col=1,
            )
        )
    with pytest.raises(ConstraintViolation, match="uq_storage_unit_parent_id_position_row"):
        with uow(engine) as session:
            session.add(
                StorageUnit(
                    kind="box",
                    name="B",
                    barcode="B-B",
                    parent_id=rack.id,
                    position_row=1,
                    position_col=1,
                )
            )


def test_foreign_keys_and_checks_are_enforced(engine):
    with pytest.raises(ConstraintViolation), uow(engine) as session:
        session.add(Participant(study_id=999, code="SLE-0002"))
    with uow(engine) as session:
        participant, box = _box_with_specimen(session)
    with pytest.raises(ConstraintViolation, match="quantity_not_negative"):
        with uow(engine) as session:
            tube = _tube(participant, box, "SLE-C", 2, 2)
            tube.quantity = -1
            session.add(tube)
