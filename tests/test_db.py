"""The database layer: engine settings, the unit of work, and constraints the database
enforces on its own (a double-booked position is impossible)."""

import concurrent.futures
import os
import sqlite3
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import select

import biobank.db
from biobank.db import insert_many, make_engine, uow
from biobank.domain.vocabulary import ParticipantStatus, Sex
from biobank.errors import ConstraintViolation
from biobank.models import Participant, ParticipantIdentity, Specimen, StorageUnit, Study


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


def _study(session) -> Study:
    study = Study(code="SLE", title="t", id_prefix="SLE")
    session.add(study)
    session.flush()
    return study


def _box_with_specimen(session):
    study = _study(session)
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


@pytest.mark.parametrize("copy_from", [1, 1_000_000], ids=["copy", "executemany"])
def test_bulk_inserts_store_what_core_stores(engine, monkeypatch, copy_from):
    """`insert_many` (COPY on PostgreSQL, else the driver's executemany) hands the driver
    values through each column's own bind processing, so every type reads back as a row
    inserted through Core does: enums, zoned times, dates, JSON, NULLs and awkward text."""
    monkeypatch.setattr(biobank.db, "COPY_FROM", copy_from)
    instant = datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
    awkward = 'tab\there, "quoted", back\\slash, line\nbreak, \\N, ünïcode'
    with uow(engine) as session:
        study = _study(session)
        people = Participant.__table__
        rows = [
            {
                "study_id": study.id,
                "code": f"{way}-{n}",
                "sex": Sex.female if n else Sex.unknown,
                "birth_year": None if n else 1980,
                "enrolled_on": date(2020, 2, 29),
                "status": ParticipantStatus.active,
                # one instant, the last row's in another zone: equal values are processed once
                "created_at": instant.astimezone(ZoneInfo("America/New_York") if n == 2 else UTC),
            }
            for way in ("core", "bulk")
            for n in range(3)
        ]
        session.execute(sa.insert(people), rows[:3])
        insert_many(session, people, rows[3:])
        found = {
            row.code: row._mapping
            for row in session.execute(sa.select(people).order_by(people.c.code))
        }
        identities = ParticipantIdentity.__table__
        ids = {row.code: row.id for row in session.execute(sa.select(people))}
        extra = {"family_name": awkward, "other": {"redcap": awkward}, "mrn": None}
        session.execute(sa.insert(identities), [{"participant_id": ids["core-0"]} | extra])
        insert_many(session, identities, [{"participant_id": ids["bulk-0"]} | extra])
        kept = {row.participant_id: row._mapping for row in session.execute(sa.select(identities))}
    for n in range(3):
        core, bulk = found[f"core-{n}"], found[f"bulk-{n}"]
        assert {k: v for k, v in bulk.items() if k not in ("id", "code")} == {
            k: v for k, v in core.items() if k not in ("id", "code")
        }
    assert found["bulk-1"]["sex"] is Sex.female and found["bulk-0"]["birth_year"] == 1980
    assert {found[f"bulk-{n}"]["created_at"].replace(tzinfo=UTC) for n in range(3)} == {instant}
    core, bulk = kept[ids["core-0"]], kept[ids["bulk-0"]]
    assert bulk["family_name"] == awkward and bulk["other"] == {"redcap": awkward}
    assert {k: v for k, v in bulk.items() if k not in ("id", "participant_id")} == {
        k: v for k, v in core.items() if k not in ("id", "participant_id")
    }


def test_bulk_inserts_tell_apart_the_hour_a_change_of_clocks_repeats(engine):
    """01:30 on the night New York's clocks go back happens twice: equal as Python compares
    them, an hour apart as instants. `insert_many` processes each distinct value once and must
    not take the second for the first."""
    first = datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    second = first.replace(fold=1)
    assert first == second and first.utcoffset() != second.utcoffset()
    with uow(engine) as session:
        study = _study(session)
        people = Participant.__table__
        rows = [
            {"study_id": study.id, "code": code, "sex": Sex.unknown, "created_at": at}
            | {"status": ParticipantStatus.active}
            for code, at in (("first", first), ("second", second))
        ]
        insert_many(session, people, rows)
        stored = dict(session.execute(sa.select(people.c.code, people.c.created_at)).all())
    assert {code: at.replace(tzinfo=UTC).isoformat() for code, at in stored.items()} == {
        "first": "2024-11-03T05:30:00+00:00",
        "second": "2024-11-03T06:30:00+00:00",
    }


def test_a_lookup_cannot_insert_in_bulk(engine):
    """A lookup has no transaction to roll back (autocommit on PostgreSQL): a bulk insert in
    one is refused before it reaches the database, as an ORM change is."""
    with uow(engine) as session:
        session.add(Study(code="SLE", title="t", id_prefix="SLE"))
    with uow(engine, lookup=True) as session:
        study_id = session.execute(sa.select(Study.id)).scalar_one()
        with pytest.raises(RuntimeError, match="a lookup unit of work changes nothing"):
            insert_many(session, Participant.__table__, [{"study_id": study_id, "code": "X-1"}])
    with uow(engine, readonly=True) as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Participant)).scalar() == 0


def test_a_lookup_sees_each_commit_made_between_lookups(engine):
    """A lookup holds no transaction and keeps nothing it loaded (on SQLite its session is
    kept for the next lookup, emptied): each lookup reads what is committed when it runs, from
    whichever thread it runs in."""
    with uow(engine) as session:
        participant, box = _box_with_specimen(session)
        session.add(_tube(participant, box, "SLE-0000001-A", 1, 1))

    seen = []  # what earlier lookups loaded is still referred to

    def volume() -> float:
        with uow(engine, lookup=True) as session:
            seen.append(
                session.exec(select(Specimen).where(Specimen.accession_id == "SLE-0000001-A")).one()
            )
            return seen[-1].quantity

    assert volume() == 500
    with uow(engine) as session:
        tube = session.exec(select(Specimen)).one()
        tube.quantity = 300
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as elsewhere:
        assert elsewhere.submit(volume).result() == 300
    with uow(engine) as session:
        session.exec(select(Specimen)).one().quantity = 100
    assert volume() == 100


def test_a_lookup_that_failed_is_not_kept_and_dispose_closes_the_kept(tmp_path):
    """A lookup session is kept for the next lookup only when it ended well, and disposing
    of the engine closes the kept ones (their connections go back to the pool)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'kept.db'}")
    with uow(engine, lookup=True) as first:
        first.execute(sa.select(1))
    with uow(engine, lookup=True) as again:
        assert again is first
        again.execute(sa.select(1))
    assert engine.pool.checkedout() == 1
    with pytest.raises(ConstraintViolation), uow(engine, lookup=True) as failing:
        assert failing is first
        raise sa.exc.IntegrityError("SELECT 1", {}, sqlite3.IntegrityError("UNIQUE failed"))
    with uow(engine, lookup=True) as fresh:
        assert fresh is not first
        fresh.execute(sa.select(1))
    engine.dispose()
    assert not fresh.in_transaction()
    engine.dispose()


def test_lookups_at_once_each_have_their_own_session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'kept.db'}")
    with uow(engine, lookup=True) as one, uow(engine, lookup=True) as two:
        assert one is not two
    with uow(engine, lookup=True) as again:
        assert again in (one, two)
    engine.dispose()


def test_a_kept_lookup_forgets_what_it_noted_and_a_dispose_drops_one_in_use(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'kept.db'}")
    with uow(engine, lookup=True) as first:
        first.info["noted"] = "by the last lookup"
    with uow(engine, lookup=True) as again:
        assert again is first and "noted" not in again.info
        engine.dispose()  # while in use: its connection is the old pool's
    with uow(engine, lookup=True) as after:
        assert after is not first
        after.execute(sa.select(1))
    assert not first.in_transaction() and engine.pool.checkedout() == 1
    engine.dispose()


def test_a_forked_child_never_uses_its_parents_connections(tmp_path):
    """A lookup session kept in the parent is left to it; the child opens its own."""
    engine = make_engine(f"sqlite:///{tmp_path / 'fork.db'}")
    with uow(engine, lookup=True) as session:
        parents = session.connection().connection.dbapi_connection
    child = os.fork()
    if child == 0:  # the child: its exit code is the verdict
        verdict = 1
        try:
            with uow(engine, lookup=True) as lookup:
                looked = lookup.connection().connection.dbapi_connection
            with uow(engine) as change:
                changed = change.connection().connection.dbapi_connection
            verdict = 0 if looked is not parents and changed is not parents else 2
        finally:
            os._exit(verdict)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    engine.dispose()


@pytest.mark.parametrize("poll", [True, False], ids=["poll", "select only"])
def test_a_pooled_connection_s_socket_is_asked_without_waiting(monkeypatch, poll):
    """`db._readable` tells a socket the server has written to (it ended the session) from an
    idle one, by `poll` where there is one and by `select` where there is not (Windows)."""
    import select
    import socket

    if not poll:
        monkeypatch.delattr(select, "poll", raising=False)
    ours, server = socket.socketpair()
    with ours, server:
        assert not biobank.db._readable(ours.fileno())
        server.sendall(b"E")  # the server's last words
        assert biobank.db._readable(ours.fileno())
        assert not biobank.db._readable(server.fileno())
