"""The deep consistency check (`services.consistency`), on both engines: a database every path
has written agrees with its history (no false positives), and each change made behind the
application's back with SQL is named."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from biobank import cli
from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.permissions import Actor
from biobank.domain.vocabulary import SpecimenStatus
from biobank.models import Specimen, SpecimenEvent
from biobank.services import (
    audit,
    consent,
    consistency,
    custody,
    exports,
    kits,
    label_data,
    lineage,
    pulls,
    reconcile,
    reservations,
    specimens,
    storage,
    withdrawals,
)
from biobank.services.consistency import ConsistencyReport
from biobank.services.demo import CONSENT_DOCUMENT, seed_demo
from biobank.services.imports import legacy as legacy_import
from biobank.services.imports import redcap as redcap_import

DATA = Path(__file__).parent / "data"
USES = ["FUTURE_RESEARCH"]
ALL_YES = dict.fromkeys(("FUTURE_RESEARCH", "GENETIC", "COMMERCIAL", "DATA_SHARING", "RECONTACT"),
                        True)  # fmt: skip


def _check(engine: Engine, actor: Actor) -> ConsistencyReport:
    with uow(engine, readonly=True) as session:
        return consistency.check_consistency(session, actor=actor)


def _execute(engine: Engine, sql: str, **params: object) -> None:
    """SQL behind the application's back, as psql would run it."""
    with engine.begin() as connection:
        connection.execute(sa.text(sql), params)


def _one(engine: Engine, sql: str, **params: object):
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).first()


def _tubes(engine: Engine, count: int, *, poolable: bool = False) -> list[str]:
    """Accession IDs of available tubes in boxes, none flagged by a withdrawal, none used by
    the steps before (each step takes the next); `poolable`: of one participant, type and
    unit."""
    query = (
        "SELECT s.accession_id, s.participant_id, s.specimen_type, s.unit FROM specimen s"
        " WHERE s.status = 'available' AND s.box_id IS NOT NULL AND s.quantity >= 200"
        " AND s.consent_withdrawal_id IS NULL AND NOT EXISTS (SELECT 1 FROM specimen_event e"
        "  WHERE e.specimen_id = s.id AND e.event_type NOT IN ('accessioned', 'aliquoted_from'))"
        " ORDER BY s.id"
    )
    with engine.connect() as connection:
        rows = connection.execute(sa.text(query)).all()
    if poolable:  # the first participant, type and unit with enough of them
        kinds = Counter(tuple(r[1:]) for r in rows)
        kind = next(k for k, n in kinds.items() if n >= count)
        rows = [r for r in rows if tuple(r[1:]) == kind]
    assert len(rows) >= count, rows
    return [r.accession_id for r in rows[:count]]


def _people(engine: Engine, count: int) -> list[str]:
    """Codes of demo participants with stored tubes and no withdrawal."""
    query = (
        "SELECT DISTINCT p.code FROM participant p JOIN specimen s ON s.participant_id = p.id"
        " WHERE s.box_id IS NOT NULL AND s.status = 'available' AND NOT EXISTS"
        " (SELECT 1 FROM consent_withdrawal w WHERE w.participant_id = p.id) ORDER BY p.code"
    )
    with engine.connect() as connection:
        codes = connection.execute(sa.text(query)).scalars().all()
    assert len(codes) >= count
    return codes[:count]


@pytest.fixture
def busy(engine, admin, tmp_path) -> Engine:
    """The demo, then every other path that writes tubes: a legacy and a REDCap import, a
    committed reconciliation, withdrawals with pulls and a renewal, aliquots, derivatives and
    pools, custody from check-out to disposal, box moves, labels, a kit, and reservations made
    by an export, handed over, returned and released."""
    with uow(engine) as s:
        seed_demo(s, actor=admin, participants=12, seed=5, with_specimens=True)
    with uow(engine) as s:
        plan = legacy_import.check_inventory(
            s, actor=admin, path=_sheet(tmp_path), study="SLE",
            sheet=legacy_import.sheet_format(timezone="America/New_York"),
        )  # fmt: skip
        assert plan.report.faults == [], plan.report.faults[:3]
        legacy_import.write_inventory(s, actor=admin, plan=plan)
    with uow(engine) as s:
        plan = redcap_import.check_redcap(
            s, actor=admin, dictionary=DATA / "redcap" / "redcap_data_dictionary.csv",
            records=DATA / "redcap" / "redcap_records.csv", study="SLE",
        )  # fmt: skip
        assert plan.report.faults == [], plan.report.faults[:3]
        redcap_import.write_redcap(s, actor=admin, plan=plan)
    with uow(engine) as s:  # BOX-0001's first two tubes swapped, its third not found
        scan = "Position,Tube ID\nA1,SLE0001-BA-CEL-02\nA2,SLE0001-BA-CEL-01\nA3,\n"
        report = reconcile.reconcile_box(s, actor=admin, box="BOX-0001", scan=scan, commit=True)
        assert len(report.moves) == 2 and len(report.missing) == 1, report
    _storage(engine, admin)
    _consent(engine, admin)
    _lineage(engine, admin)
    _custody(engine, admin)
    _reservations(engine, admin, tmp_path)
    with engine.connect() as connection:
        kinds = set(connection.execute(sa.select(SpecimenEvent.event_type)).scalars())
    assert kinds >= {
        "accessioned", "aliquoted", "aliquoted_from", "derived", "derived_from", "pooled",
        "pooled_from", "placed", "moved", "moved_with_unit", "checked_out", "checked_in",
        "position_released", "thawed", "depleted", "disposed", "distributed", "missing",
        "consent_withdrawn", "consent_renewed", "reserved", "released", "label_printed",
    }, kinds  # fmt: skip
    return engine


def _sheet(folder: Path) -> Path:
    """The legacy sample, its month-12 tubes renamed: it abbreviates month 6 and 12 alike."""
    lines = (DATA / "legacy_inventory.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = folder / "legacy.csv"
    path.write_text(
        "".join(line.replace("-MO-", "-M12-", 1) if ",month_12," in line else line
                for line in lines),
        encoding="utf-8",
    )  # fmt: skip
    return path


def _storage(engine: Engine, admin: Actor) -> None:
    """A freezer of two boxes and a rack; the demo's first box moved into the rack."""
    (demo_box,) = _one(engine, "SELECT barcode FROM storage_unit WHERE kind = 'box' ORDER BY id")
    with uow(engine) as s:
        add = storage.add_unit
        add(s, actor=admin, kind="freezer", name="-80 test", barcode="FRZ-T", grid=(1, 3))
        for barcode in ("BOX-T1", "BOX-T2"):
            add(s, actor=admin, kind="box", name=barcode, barcode=barcode, parent="FRZ-T",
                grid=(9, 9))  # fmt: skip
        add(s, actor=admin, kind="rack", name="Rack", barcode="RACK-T", parent="FRZ-T",
            grid=(2, 1))  # fmt: skip
        storage.move_unit(s, actor=admin, unit=demo_box, destination="RACK-T")


def _consent(engine: Engine, admin: Actor) -> None:
    """One participant withdraws everything for destruction (their tubes pulled); another
    withdraws GENETIC and signs again, which lifts the flags."""
    gone, renewed = _people(engine, 2)
    yesterday = date.today() - timedelta(days=1)
    with uow(engine) as s:
        withdrawals.withdraw(
            s, actor=admin, participant=gone, withdrawn_on=yesterday,
            requested_by="participant", disposition="destroy",
        )  # fmt: skip
        withdrawals.withdraw(
            s, actor=admin, participant=renewed, withdrawn_on=yesterday, statement="GENETIC",
            requested_by="participant", disposition="keep_no_use",
        )  # fmt: skip
    with uow(engine) as s:
        pulled = pulls.pull_list(s, actor=admin, participant=gone)
        assert pulled
        for item in pulled:
            pulls.pull(s, actor=admin, accession=item.accession_id)
        consent.record_consent(
            s, actor=admin, participant=renewed, document=CONSENT_DOCUMENT, version="3.0",
            signed_on=date.today(), answers=ALL_YES,
        )  # fmt: skip


def _lineage(engine: Engine, admin: Actor) -> None:
    """Aliquots into a new box, one parent drawn to nothing (depleted), a derivative, a pool."""
    parent, emptied, derived = _tubes(engine, 3)
    with uow(engine) as s:
        lineage.aliquot(s, actor=admin, parent=parent, count=2, volume=50, destination="BOX-T1")
        left = s.execute(
            sa.select(Specimen.quantity).where(Specimen.accession_id == emptied)
        ).scalar_one()
        lineage.aliquot(s, actor=admin, parent=emptied, count=1, volume=left)
        lineage.derive(
            s, actor=admin, parent=derived, specimen_type="DNA", quantity=12, unit="ug",
            used=100, destination="BOX-T1",
        )  # fmt: skip
    first, second = _tubes(engine, 2, poolable=True)
    with uow(engine) as s:
        lineage.pool(s, actor=admin, sources=[(first, 100), (second, 50)], destination="BOX-T2")


def _custody(engine: Engine, admin: Actor) -> None:
    out, released, moved, swapped, lost, used, gone, sent, thawed = _tubes(engine, 9)
    (person,) = _people(engine, 1)
    with uow(engine) as s:
        for accession in (out, released):
            custody.check_out(s, actor=admin, accession=accession)
        custody.check_in(s, actor=admin, accession=out)  # back to its held position
        custody.release_position(s, actor=admin, accession=released)
        custody.check_in(s, actor=admin, accession=released, destination="BOX-T2")
        custody.move(s, actor=admin, accession=moved, destination="BOX-T2", position="I9")
        custody.rearrange(s, actor=admin, box="BOX-T2", placements={moved: "I8", swapped: "I9"})
        custody.mark_missing(s, actor=admin, accession=lost)
        custody.move(s, actor=admin, accession=lost, destination="BOX-T1")  # found again
        custody.deplete(s, actor=admin, accession=used)
        custody.dispose(s, actor=admin, accession=gone, reason="cracked")
        custody.distribute(s, actor=admin, accession=sent, recipient="Core lab", uses=USES)
        custody.record_thaw(s, actor=admin, accession=thawed)
        label_data.record_printed(s, actor=admin, accession_ids=[thawed, moved], target="test")
        kit = kits.reserve_kit(s, actor=admin, participant=person, visit="baseline", count=1,
                               specimen_type="PL1")  # fmt: skip
        specimens.accession(  # its snapshot keeps the offset, the database gives back UTC
            s, actor=admin, participant=person, visit="baseline", specimen_type="PL1",
            quantity=500, unit="uL", kit_id=kit.accession_ids[0], destination="BOX-T1",
            collected_at=datetime(2024, 5, 2, 8, 30, tzinfo=timezone(timedelta(hours=-7))),
        )  # fmt: skip


def _reservations(engine: Engine, admin: Actor, tmp_path: Path) -> None:
    """An export reserves serum for a request; one tube is handed over and back (reserved
    again), one distributed (its reservation ends), the rest released."""
    request = exports.ExportRequest(
        query=CohortQuery(specimen_types=["SER"]), uses=USES, reserve_request="REQ-1"
    )
    with uow(engine) as s:
        exports.run_export(s, actor=admin, request=request, directory=tmp_path)
    with engine.connect() as connection:
        held = connection.execute(
            sa.select(Specimen.accession_id)
            .where(Specimen.status == SpecimenStatus.reserved, Specimen.box_id.is_not(None))
            .order_by(Specimen.id)
        ).scalars().all()  # fmt: skip
    assert len(held) >= 3
    with uow(engine) as s:
        custody.check_out(s, actor=admin, accession=held[0])
        custody.check_in(s, actor=admin, accession=held[0])
        custody.distribute(s, actor=admin, accession=held[1], recipient="Core lab", uses=USES)
        reservations.release_reservations(s, actor=admin, accessions=held[2:4], reason="not needed")


# --- No false positives ------------------------------------------------------------------------


def test_every_path_leaves_the_inventory_as_its_history_says(busy, admin):
    report = _check(busy, admin)
    assert report.problems == [] and report.ok
    (tubes,) = _one(busy, "SELECT count(*) FROM specimen")
    (boxes,) = _one(busy, "SELECT count(*) FROM storage_unit WHERE holds_specimens")
    assert (report.specimens, report.boxes) == (tubes, boxes)
    assert tubes > 401 + 48  # the legacy sheet's and the demo's


def test_each_batch_is_checked_whole(busy, admin, monkeypatch):
    """Batches of 7 tubes: a specimen's events and audit entries are read with its batch."""
    monkeypatch.setattr(consistency, "BATCH", 7)
    _execute(busy, "UPDATE specimen SET notes = 'edited' WHERE id IN (7, 8, 9)")
    report = _check(busy, admin)
    assert report.specimens == _one(busy, "SELECT count(*) FROM specimen")[0]
    assert {(p.kind, p.stored) for p in report.problems} == {("audit", "notes=edited")}
    assert report.problem_count == 3


# --- Changes behind the application's back -----------------------------------------------------


@pytest.fixture
def stored(cohort_db, admin) -> Engine:
    """The cohort's tubes in BOX-A (A1, A2, …), BOX-B empty; all consistent."""
    with uow(cohort_db) as s:
        storage.add_unit(s, actor=admin, kind="freezer", name="F", barcode="FRZ-1", grid=(1, 2))
        for barcode in ("BOX-A", "BOX-B"):
            storage.add_unit(s, actor=admin, kind="box", name=barcode, barcode=barcode,
                             parent="FRZ-1", grid=(9, 9))  # fmt: skip
        tubes = s.execute(sa.select(Specimen.accession_id).order_by(Specimen.id)).scalars()
        for accession in tubes.all():
            custody.move(s, actor=admin, accession=accession, destination="BOX-A")
    assert _check(cohort_db, admin).ok
    return cohort_db


def _first_tube(engine: Engine) -> str:
    return _one(engine, "SELECT accession_id FROM specimen ORDER BY id LIMIT 1")[0]


def _found(report: ConsistencyReport) -> set[tuple[str, str, str, str]]:
    return {(p.kind, p.entity, p.stored, p.expected) for p in report.problems}


def _box_id(engine: Engine, barcode: str) -> int:
    return _one(engine, "SELECT id FROM storage_unit WHERE barcode = :b", b=barcode)[0]


def _last_entry(engine: Engine, tube: str) -> int:
    """The id of the tube's latest audit entry that holds its row (not a label print's)."""
    return _one(
        engine,
        "SELECT max(a.id) FROM audit_entry a JOIN specimen s"
        " ON a.entity = 'specimen' AND a.entity_id = CAST(s.id AS VARCHAR(64))"
        " WHERE s.accession_id = :tube AND a.action <> 'specimen.label_printed'",
        tube=tube,
    )[0]


def test_a_tube_moved_and_emptied_with_sql_is_named(stored, admin):
    tube = _first_tube(stored)
    (box_a, box_b) = (_box_id(stored, "BOX-A"), _box_id(stored, "BOX-B"))
    _execute(
        stored,
        "UPDATE specimen SET box_id = :box, position_row = 3, position_col = 4, quantity = 1"
        " WHERE accession_id = :tube",
        box=box_b, tube=tube,
    )  # fmt: skip
    report = _check(stored, admin)
    assert _found(report) == {
        ("location", tube, "BOX-B C4", "BOX-A A1"),
        (
            "audit", tube,
            f"quantity=1.0, box_id={box_b}, position_row=3, position_col=4",
            f"quantity=500.0, box_id={box_a}, position_row=1, position_col=1"
            f" (entry {_last_entry(stored, tube)})",
        ),
        ("free_slots", "BOX-A", "71", "72 (9x9 positions, 9 tubes)"),
        ("free_slots", "BOX-B", "81", "80 (9x9 positions, 1 tubes)"),
    }  # fmt: skip
    assert report.problem_count == 4 and not report.ok


def test_a_status_changed_with_sql_is_named(stored, admin):
    tube = _first_tube(stored)
    _execute(stored, "UPDATE specimen SET status = 'distributed' WHERE accession_id = :tube",
             tube=tube)  # fmt: skip
    assert _found(_check(stored, admin)) == {
        ("status", tube, "distributed", "available (after placed)"),
        ("position", tube, "BOX-A A1", "no position (distributed)"),
        ("audit", tube, "status=distributed",
         f"status=available (entry {_last_entry(stored, tube)})"),
    }  # fmt: skip


def test_a_stale_free_count_is_named(stored, admin):
    _execute(stored, "UPDATE storage_unit SET free_slots = free_slots - 1 WHERE barcode = 'BOX-B'")
    assert _found(_check(stored, admin)) == {
        ("free_slots", "BOX-B", "80", "81 (9x9 positions, 0 tubes)")
    }


def test_a_label_printed_since_hides_nothing(stored, admin):
    """A label print's audit entry names the printer, not the row: the row is compared with
    the entry before it."""
    tube = _first_tube(stored)
    with uow(stored) as s:
        label_data.record_printed(s, actor=admin, accession_ids=[tube], target="test")
    assert _check(stored, admin).ok
    _execute(stored, "UPDATE specimen SET notes = 'edited' WHERE accession_id = :tube", tube=tube)
    assert _found(_check(stored, admin)) == {
        ("audit", tube, "notes=edited", f"notes=None (entry {_last_entry(stored, tube)})")
    }


def test_a_tube_without_history_is_named(stored, admin):
    """A row inserted with SQL has no custody event and no audit entry."""
    _execute(
        stored,
        "INSERT INTO specimen (accession_id, participant_id, kind, specimen_type,"
        " initial_quantity, quantity, unit, status, freeze_thaw_count, minutes_out, version,"
        " created_at, updated_at) SELECT 'FORGED-1', participant_id, kind, specimen_type, 5, 5,"
        " unit, status, 0, 0, 1, created_at, updated_at FROM specimen ORDER BY id LIMIT 1",
    )  # fmt: skip
    assert _found(_check(stored, admin)) == {
        ("status", "FORGED-1", "available", "no custody event"),
        ("audit", "FORGED-1", "a row", "no audit entry holding it"),
    }


def test_the_list_is_bounded_and_everything_counted(stored, admin, monkeypatch):
    monkeypatch.setattr(consistency, "MAX_LISTED", 2)
    _execute(stored, "UPDATE specimen SET freeze_thaw_count = freeze_thaw_count + 5")
    report = _check(stored, admin)
    assert report.problem_count == 10 and len(report.problems) == 2


def test_a_direct_update_leaves_audit_verify_passing(stored, admin):
    """Why this check exists: the chain is intact, the row is not what it says."""
    _execute(stored, "UPDATE specimen SET quantity = 1 WHERE id = 1")
    with uow(stored, readonly=True) as s:
        audit.verify_chain(s, actor=admin)
    assert not _check(stored, admin).ok


# --- The command -------------------------------------------------------------------------------


@pytest.fixture
def command(engine, admin, db_url, monkeypatch):
    """`command(user, *options, code=0)` runs the check on a small demo, registered under a
    name of its own (the lead wires it as `audit reconcile`)."""
    with uow(engine) as s:
        seed_demo(s, actor=admin, participants=3, with_specimens=True)
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    monkeypatch.setitem(cli.GROUPS, "consistency", ("biobank.cli.consistency_commands", "app"))
    runner = CliRunner()

    def run(user: str, *options: str, code: int = 0):
        result = runner.invoke(cli.app, ["-u", user, "consistency", "check", *options])
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return run


def test_command_exit_codes_lines_and_json(command, engine):
    good = command("admin")
    assert good.stdout == "" and "agree with their history" in good.stderr
    assert json.loads(command("admin", "--json").stdout)["ok"]
    _execute(engine, "UPDATE specimen SET quantity = 1 WHERE id = 1")
    _execute(engine, "UPDATE storage_unit SET free_slots = 0 WHERE holds_specimens")
    bad = command("admin", code=9)
    lines = bad.stdout.splitlines()
    assert any(" audit: stored quantity=1.0; expected quantity=" in line for line in lines)
    assert any(" free_slots: stored 0; expected " in line for line in lines)
    assert f"{len(lines)} disagreements in " in bad.stderr
    data = json.loads(command("admin", "--json", code=9).stdout)
    assert not data["ok"] and data["problem_count"] == len(data["problems"]) == len(lines)
    refused = command("tech", code=3)
    assert "may not read the audit trail" in refused.stderr
