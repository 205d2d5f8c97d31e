"""Importing a legacy inventory spreadsheet: all rows or none, every fault reported, the
storage tree, participants and visits created as needed, and an audit chain that still holds."""

import codecs
import csv
import json
import re
import sqlite3
from collections import Counter
from contextlib import nullcontext
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from inventory import accession_tube

from biobank.db import BULK_CACHE_KIB, uow
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import QuantityUnit, Role
from biobank.errors import PermissionDenied, ValidationError
from biobank.models import Specimen
from biobank.services import (
    audit,
    participants,
    scan,
    storage,
    studies,
)
from biobank.services.imports import common, legacy
from biobank.services.imports.common import ImportReport

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "legacy_inventory.csv"  # as the lab gave it: month 6 and 12 IDs collide
FAULTY = DATA / "legacy_faulty.csv"
TABLES = ("participant", "visit", "storage_unit", "specimen", "specimen_event", "audit_entry")
NEW_YORK = "America/New_York"
# a sheet is checked and written a batch at a time: a repeat is found across batches as within
# one, a visit is dated by its earliest tube in any batch, and what a batch names is found again
ACROSS_BATCHES = pytest.mark.parametrize("batch_rows", [1000, 3], ids=["one batch", "batches of 3"])


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")


@pytest.fixture
def clean_sample(tmp_path) -> Path:
    """The sample with its month-12 tubes renamed `…-M12-…`: the sample abbreviates month 6
    and month 12 alike, so 27 of its IDs name two tubes (see the test of the sample itself)."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    renamed = [line.replace("-MO-", "-M12-", 1) if ",month_12," in line else line for line in lines]
    path = tmp_path / "legacy_inventory_clean.csv"
    path.write_text("".join(renamed), encoding="utf-8", newline="")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.DictReader(file))


def _check(engine, actor, path: Path, **options) -> ImportReport:
    with uow(engine, readonly=True) as session:
        sheet = legacy.sheet_format(**options)
        return legacy.check_inventory(
            session, actor=actor, path=path, study="SLE", sheet=sheet
        ).report


def _import(engine, actor, path: Path, **options) -> ImportReport:
    with uow(engine) as session:
        sheet = legacy.sheet_format(**options)
        plan = legacy.check_inventory(session, actor=actor, path=path, study="SLE", sheet=sheet)
        assert plan.report.faults == [], plan.report.faults[:5]
        return legacy.write_inventory(session, actor=actor, plan=plan)


def _state(engine) -> tuple[dict[str, int], str]:
    """Row counts and the audit chain's tail: what an import that changed nothing left."""
    with engine.connect() as connection:
        counts = {
            table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in TABLES
        }
        tail = connection.execute(
            sa.text("SELECT hash FROM audit_entry ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    return counts, tail


def _audit_actions(engine) -> Counter:
    with engine.connect() as connection:
        return Counter(connection.execute(sa.text("SELECT action FROM audit_entry")).scalars())


@ACROSS_BATCHES
def test_the_sample_imports_and_scans_find_its_tubes(
    engine, admin, study, clean_sample, monkeypatch, batch_rows
):
    monkeypatch.setattr(common, "BATCH_ROWS", batch_rows)
    rows = _rows(clean_sample)
    visits = {(r["Subject"], r["Visit"]) for r in rows}
    report = _import(
        engine, admin, clean_sample, timezone=NEW_YORK, precentrifugation_temperature="RT"
    )
    assert (report.rows, report.imported, report.fault_count) == (len(rows), 401, 0)
    assert (report.new_participants, report.new_visits, report.new_units) == (24, len(visits), 7)
    counts, _ = _state(engine)
    assert counts["specimen"] == counts["specimen_event"] == 401
    actions = _audit_actions(engine)
    assert actions["specimen.accessioned"] == 401
    assert (actions["participant.add"], actions["visit.add"]) == (24, len(visits))
    assert actions["storage.add"] == 7
    with engine.connect() as connection:  # created in the order the sheet names them
        made = connection.execute(sa.text("SELECT code FROM participant ORDER BY id")).scalars()
        assert list(made) == list(dict.fromkeys(r["Subject"] for r in rows))

    with uow(engine, readonly=True) as session:
        found = scan.resolve_scan(session, actor=admin, scanned="SLE0001-BA-SER-01")
        assert audit.verify_chain(session, actor=admin).entries == sum(actions.values())
    tube = found.specimen
    assert found.kind == "specimen" and tube.legacy_id == "SLE0001-BA-SER-01"
    assert (tube.participant_code, tube.visit_label) == ("SLE0001", "baseline")
    assert (tube.specimen_type, tube.quantity, tube.unit) == ("SER", 500, "uL")
    assert tube.location == "FRZ-01 > R01 > BOX-0001 A7" and tube.freeze_thaw_count == 1
    # 09:00 and 14:00 in New York (daylight time) are 13:00 and 18:00 UTC; 5 h at RT is E
    assert tube.collected_at == datetime(2017, 4, 28, 13, 0, tzinfo=UTC)
    assert tube.processed_at == datetime(2017, 4, 28, 18, 0, tzinfo=UTC)
    assert tube.sprec_code == "SER-XXX-E-X-X-X-X"


@ACROSS_BATCHES
def test_each_tube_keeps_what_the_sheet_says(
    engine, admin, study, clean_sample, monkeypatch, batch_rows
):
    monkeypatch.setattr(common, "BATCH_ROWS", batch_rows)
    _import(engine, admin, clean_sample, timezone=NEW_YORK)
    by_id = {r["Sample ID"]: r for r in _rows(clean_sample)}
    with engine.connect() as connection:
        stored = connection.execute(
            sa.select(
                Specimen.legacy_id,
                Specimen.freeze_thaw_count,
                Specimen.notes,
                Specimen.sprec_code,
                Specimen.initial_quantity,
            )
        ).all()
        visits = connection.execute(
            sa.text(
                "SELECT p.code, v.label, v.visit_date, s.specimen_id FROM visit v "
                "JOIN participant p ON p.id = v.participant_id LEFT JOIN ("
                "  SELECT visit_id, min(id) AS specimen_id FROM specimen GROUP BY visit_id"
                ") s ON s.visit_id = v.id"
            )
        ).all()
        after = connection.execute(
            sa.text("SELECT after FROM audit_entry WHERE action = 'specimen.accessioned' LIMIT 1")
        ).scalar_one()
    assert {s.legacy_id for s in stored} == by_id.keys()
    for s in stored:
        row = by_id[s.legacy_id]
        assert s.freeze_thaw_count == int(row["Thaws"])
        assert s.notes == (row["Comments"] or None)
        assert s.initial_quantity == float(row["Volume (uL)"])
        assert s.sprec_code == f"{row['Sample type']}-XXX-X-X-X-X-X"  # temperature unknown
    # every visit is dated by its earliest tube, and holds tubes
    earliest = {}
    for r in by_id.values():
        day = datetime.strptime(r["Date collected"], "%m/%d/%Y").date()
        key = (r["Subject"], canonical_visit_label(r["Visit"]))  # month_6 is "month 6"
        earliest[key] = min(earliest.get(key, day), day)
    assert {(c, label): str(day) for c, label, day, _ in visits} == {
        key: str(day) for key, day in earliest.items()
    }
    assert all(specimen_id is not None for *_, specimen_id in visits)
    assert earliest["SLE0001", "month 6"] == date(2017, 10, 24)
    assert set(json.loads(after)) == set(Specimen.__table__.columns.keys())


def test_storage_is_built_and_allocation_finds_the_free_slots(engine, admin, study, clean_sample):
    _import(engine, admin, clean_sample, timezone=NEW_YORK)
    with uow(engine, readonly=True) as session:
        tree = storage.storage_tree(session, actor=admin, root="FRZ-01")
        last_box = storage.box_view(session, actor=admin, barcode="BOX-0005")
    assert [(n.depth, n.unit.kind, n.unit.barcode) for n in tree] == [
        (0, "freezer", "FRZ-01"),
        (1, "rack", "R01"),
        *[(2, "box", f"BOX-000{i}") for i in range(1, 6)],
    ]
    boxes = [n.unit for n in tree if n.unit.kind == "box"]
    assert [(b.capacity, b.free_slots) for b in boxes] == [(81, 0)] * 4 + [(81, 4)]
    assert boxes[0].path == "FRZ-01 > R01 > BOX-0001"
    empty = [c.label for c in last_box.cells if c.accession_id is None]
    assert empty == ["I6", "I7", "I8", "I9"]
    with uow(engine) as session:
        placed = accession_tube(
            session, admin, "SLE0001", visit="baseline", quantity=100, destination="FRZ-01"
        )
    assert placed.location == "FRZ-01 > R01 > BOX-0005 I6"


def test_a_dry_run_changes_nothing(engine, admin, study, clean_sample):
    before = _state(engine)
    report = _check(engine, admin, clean_sample)
    assert (report.rows, report.fault_count, report.imported) == (401, 0, 0)
    assert (report.new_participants, report.new_units) == (24, 7)
    assert _state(engine) == before


def test_an_import_writes_with_settings_of_its_own_and_gives_them_back(
    engine, admin, study, clean_sample
):
    """An import writes, and commits, with settings of its own (`db.prepare_bulk_writing`):
    SQLite with a page cache that holds more of the hash chain's indexes, where its audit
    entries land at random places; PostgreSQL with no statement prepared, so each batch's
    reads are planned for the tables as they have grown. The pooled connection gets its own
    back as it returns, after a commit or a rollback alike."""
    sqlite = engine.dialect.name == "sqlite"
    seen, connections = [], []

    def setting(connection) -> int | None:
        if sqlite:
            return connection.execute("PRAGMA cache_size").fetchone()[0]
        return connection.prepare_threshold

    def in_use(session) -> int | None:
        connections.append(session.connection().connection.dbapi_connection)
        return setting(connections[-1])

    def written(_rows: int, session) -> None:
        seen.append(in_use(session))
        if fail:
            raise RuntimeError("the terminal was switched off")

    for fail in (True, False):
        with pytest.raises(RuntimeError) if fail else nullcontext(), uow(engine) as session:
            before = in_use(session)
            plan = legacy.check_inventory(session, actor=admin, path=clean_sample, study="SLE")
            legacy.write_inventory(
                session, actor=admin, plan=plan, progress=lambda n, s=session: written(n, s)
            )
            assert in_use(session) == seen[-1]  # still its own until the unit of work ends
        assert setting(connections[-1]) == before
    assert set(seen) == ({-BULK_CACHE_KIB} if sqlite else {None})
    assert before not in seen  # what was given back is the connection's own, not the import's
    assert _audit_actions(engine)["specimen.accessioned"] == 401


def _let_go(plan: legacy.ImportPlan) -> bool:
    """Whether a plan's temporary files are closed."""
    try:
        plan.scratch.file.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return plan.spool.closed
    return False


def test_a_plan_lets_go_of_its_temporary_files(engine, admin, study, clean_sample):
    with uow(engine) as session:
        written = legacy.check_inventory(session, actor=admin, path=clean_sample, study="SLE")
        refused = legacy.check_inventory(session, actor=admin, path=FAULTY, study="SLE")
        checked = legacy.check_inventory(session, actor=admin, path=FAULTY, study="SLE")
        assert not any(map(_let_go, (written, refused, checked)))
        legacy.write_inventory(session, actor=admin, plan=written)
        with pytest.raises(ValidationError, match="nothing was imported"):
            legacy.write_inventory(session, actor=admin, plan=refused)
        checked.close()  # a dry run's
    assert all(map(_let_go, (written, refused, checked)))


def _existing_tube(engine, admin):
    """FRZ-09 > R09 > BOX-0009 with tube SLE0099-OLD-01 in A1."""
    with uow(engine) as session:
        storage.add_unit(session, actor=admin, kind="freezer", name="FRZ-09", barcode="FRZ-09")
        storage.add_unit(
            session, actor=admin, kind="rack", name="R09", parent="FRZ-09", barcode="R09"
        )
        storage.add_unit(
            session,
            actor=admin,
            kind="box",
            name="BOX-0009",
            parent="R09",
            grid=(9, 9),
            barcode="BOX-0009",
        )
        participants.add_participant(session, actor=admin, study="SLE", code="SLE0099")
        accession_tube(
            session,
            admin,
            "SLE0099",
            quantity=100,
            legacy_id="SLE0099-OLD-01",
            destination="BOX-0009",
            position="A1",
        )


@ACROSS_BATCHES
def test_every_faulty_row_is_reported_and_nothing_is_imported(
    engine, admin, study, monkeypatch, batch_rows
):
    monkeypatch.setattr(common, "BATCH_ROWS", batch_rows)
    _existing_tube(engine, admin)
    before = _state(engine)
    with uow(engine) as session:
        plan = legacy.check_inventory(session, actor=admin, path=FAULTY, study="SLE")
        with pytest.raises(ValidationError, match="nothing was imported"):
            legacy.write_inventory(session, actor=admin, plan=plan)
    report = plan.report
    assert {(f.row, f.column, f.value) for f in report.faults} == {
        (2, "Sample type", "XYZ"),
        (3, "Volume (uL)", "lots"),
        (4, "Volume (uL)", "-5"),
        (5, "Date collected", "13/45/2017"),
        (6, "Time collected", "25:00"),
        (7, "Time processed", "08:00"),  # processed before collected
        (8, "Position", "J1"),  # outside the 9x9 grid
        (9, "Sample ID", "SLE0100-BA-SER-01"),  # also on row 1
        (10, "Position", "A1"),  # row 1 is there
        (11, "Sample ID", "SLE0099-OLD-01"),  # recorded in the database
        (12, "Position", "A1"),  # BOX-0009 A1 holds a tube in the database
        (13, "Thaws", "-1"),
        (14, "Subject", ""),
        (15, "Box", "BOX-0010"),  # row 1 put BOX-0010 in rack R09
        (16, "Sample type", "ABC"),
        (16, "Volume (uL)", "0"),
    }
    assert (report.rows, report.faulty_rows, report.fault_count) == (16, 15, 16)
    by_row = {f.row: f for f in report.faults}
    assert (by_row[3].line, by_row[4].line) == (4, 6)  # a blank line lies between them
    assert "outside the 9x9 grid" in by_row[8].reason and "row 1" in by_row[9].reason
    assert "SLE-" in by_row[12].reason  # names the tube in the way
    assert _state(engine) == before


@ACROSS_BATCHES
def test_the_sample_as_given_is_refused_for_its_repeated_ids(
    engine, admin, study, monkeypatch, batch_rows
):
    monkeypatch.setattr(common, "BATCH_ROWS", batch_rows)
    report = _check(engine, admin, SAMPLE)
    repeated = [r["Sample ID"] for r in _rows(SAMPLE)]
    twice = {i for i, n in Counter(repeated).items() if n > 1}
    assert (report.rows, report.faulty_rows) == (401, len(twice)) and len(twice) == 27
    assert {f.value for f in report.faults} == twice
    assert {f.column for f in report.faults} == {"Sample ID"}
    first = report.faults[0]
    assert (first.row, first.line, first.reason) == (78, 79, "the same ID is on row 66")


def test_importing_the_same_file_again_is_refused_row_by_row(engine, admin, study, clean_sample):
    _import(engine, admin, clean_sample)
    before = _state(engine)
    report = _check(engine, admin, clean_sample)
    assert report.faulty_rows == 401 and report.fault_count == 802  # ID and position, each row
    recorded = [f for f in report.faults if f.column == "Sample ID"]
    assert [f.row for f in recorded] == list(range(1, 402))
    assert all(f.reason == "a specimen with this ID is recorded" for f in recorded)
    assert _state(engine) == before


@ACROSS_BATCHES
def test_existing_storage_participants_and_visits_are_reused(
    engine, admin, study, tmp_path, monkeypatch, batch_rows
):
    monkeypatch.setattr(common, "BATCH_ROWS", batch_rows)
    _existing_tube(engine, admin)
    with uow(engine) as session:
        participants.add_visit(
            session,
            actor=admin,
            participant="SLE0099",
            label="baseline",
            visit_date=date(2017, 1, 1),
        )
    path = tmp_path / "more.csv"
    place = "FRZ-09,R09,BOX-0009"
    path.write_text(
        FAULTY.read_text().splitlines()[0]
        + f"\nSLE0099-BA-SER-03,SLE0099,Baseline,SER,500,04/28/2017,09:00,11:00,{place},B1,0,"
        + f"\nSLE0099-M6-SER-01,SLE0099,month 6,SER,500,10/28/2017,09:00,11:00,{place},B2,0,\n"
    )
    report = _import(engine, admin, path)
    assert (report.new_participants, report.new_visits, report.new_units) == (0, 1, 0)
    with uow(engine, readonly=True) as session:
        box = storage.box_view(session, actor=admin, barcode="BOX-0009").unit
        shown = participants.show_participant(session, actor=admin, code="SLE0099")
    assert box.free_slots == 81 - 3
    assert [(v.label, v.visit_date) for v in shown.visits] == [
        ("baseline", date(2017, 1, 1)),
        ("month 6", date(2017, 10, 28)),
    ]


def _variant(tmp_path, name: str, *, encoding: str, delimiter: str, bom: bytes = b"") -> Path:
    """The sample's first five rows, written as other spreadsheets write them."""
    rows = [list(_rows(SAMPLE)[0].keys())] + [list(r.values()) for r in _rows(SAMPLE)[:5]]
    rows[1][-1] = "hémolysé"
    rows[2] = [f"  {cell} " for cell in rows[2]]
    lines = [delimiter.join(row) for row in rows]
    text = "\r\n".join([lines[0], "", *lines[1:3], "  ", *lines[3:]]) + "\r\n"
    path = tmp_path / name
    path.write_bytes(bom + text.encode(encoding))
    return path


@pytest.mark.parametrize(
    ("encoding", "bom", "delimiter", "read_as"),
    [
        ("utf-8", codecs.BOM_UTF8, ";", "utf-8-sig"),
        ("utf-8", b"", ",", "utf-8"),
        ("cp1252", b"", "\t", "cp1252"),
        ("utf-16-le", codecs.BOM_UTF16_LE, "\t", "utf-16"),
    ],
)
def test_files_as_spreadsheets_write_them(
    engine, admin, study, tmp_path, encoding, bom, delimiter, read_as
):
    path = _variant(tmp_path, "variant.csv", encoding=encoding, delimiter=delimiter, bom=bom)
    report = _import(engine, admin, path)
    assert (report.encoding, report.delimiter, report.imported) == (read_as, delimiter, 5)
    assert any("not UTF-8" in n for n in report.notices) == (read_as == "cp1252")
    with engine.connect() as connection:
        notes = connection.execute(
            sa.select(Specimen.notes).where(Specimen.legacy_id == "SLE0001-BA-CEL-01")
        ).scalar_one()
        padded = connection.execute(
            sa.select(Specimen.freeze_thaw_count).where(Specimen.legacy_id == "SLE0001-BA-CEL-02")
        ).scalar_one()
    assert (notes, padded) == ("hémolysé", 0)


def test_a_missing_column_is_named_and_only_admins_may_import(engine, actors, study, clean_sample):
    path = clean_sample.with_name("renamed.csv")
    path.write_text(clean_sample.read_text().replace("Subject,", "Patient,", 1))
    report = _check(engine, actors[Role.admin], path)
    assert [(f.row, f.line, f.column) for f in report.faults] == [(None, 1, "Subject")]
    assert "--column subject=HEADER" in report.faults[0].reason
    assert _check(engine, actors[Role.admin], path, columns={"subject": "patient"}).faults == []
    with pytest.raises(PermissionDenied):
        _check(engine, actors[Role.technician], path)


def test_header_quirks_and_rows_wider_than_the_header(engine, admin, study, clean_sample):
    header, first, second, *_ = clean_sample.read_text().splitlines()
    extra = clean_sample.with_name("extra.csv")
    extra.write_text(f"{header},Freezer shelf,,\n{first},3,,\n{second},3,,\n")
    report = _check(engine, admin, extra)
    assert (report.rows, report.faults) == (2, [])
    assert report.notices == ["columns not imported: Freezer shelf"]

    twice = clean_sample.with_name("twice.csv")
    twice.write_text(f"{header},Box\n{first},BOX-0002\n")
    assert [(f.row, f.column, f.reason) for f in _check(engine, admin, twice).faults] == [
        (None, "Box", "two columns are named 'Box'")
    ]

    wide = clean_sample.with_name("wide.csv")
    wide.write_text(f"{header}\n{first}\n{second},slightly, hemolyzed\n")
    (fault,) = _check(engine, admin, wide).faults
    assert (fault.row, fault.line, fault.column) == (2, 3, None)
    assert fault.reason == "16 values for 14 columns (quote values holding the delimiter ',')"


def test_sheet_format_layers_defaults_file_and_flags(tmp_path):
    mapping = tmp_path / "lab.toml"
    mapping.write_text(
        'date_format = "%d.%m.%Y"\nunit = "mL"\ntimezone = "Europe/Berlin"\nbox_grid = "10x10"\n'
        '[columns]\nsubject = "Patient"\nlegacy_id = "Tube"\n'
    )
    sheet = legacy.sheet_format(mapping, columns={"subject": "Pt"}, unit="µL")
    assert (sheet.columns["subject"], sheet.columns["legacy_id"]) == ("Pt", "Tube")
    assert sheet.columns["box"] == "Box" and sheet.date_format == "%d.%m.%Y"
    assert (sheet.unit, str(sheet.timezone), sheet.box_grid) == (
        QuantityUnit.uL,
        "Europe/Berlin",
        (10, 10),
    )
    default = legacy.sheet_format()
    assert (default.date_format, default.unit, default.timezone) == ("%m/%d/%Y", None, None)
    mapping.write_text('colour = "blue"\n')
    for bad, field in [
        ({"mapping": mapping}, "mapping"),
        ({"columns": {"colour": "Colour"}}, "columns"),
        ({"date_format": "%d"}, "date_format"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"unit": "pints"}, "unit"),
        ({"box_grid": "9by9"}, "box_grid"),
        ({"precentrifugation_temperature": "hot"}, "precentrifugation_temperature"),
    ]:
        with pytest.raises(ValidationError) as caught:
            legacy.sheet_format(**bad)
        assert caught.value.field == field


def test_bulk_audit_entries_chain_with_single_ones_in_one_transaction(
    engine, admin, study, clean_sample
):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="VAX", title="before the import")
        plan = legacy.check_inventory(session, actor=admin, path=clean_sample, study="SLE")
        legacy.write_inventory(session, actor=admin, plan=plan)
        studies.add_study(session, actor=admin, code="CART", title="after the import")
    with uow(engine, readonly=True) as session:
        assert audit.verify_chain(session, actor=admin).entries > 401
    with engine.connect() as connection:
        actions = (
            connection.execute(sa.text("SELECT action FROM audit_entry ORDER BY id"))
            .scalars()
            .all()
        )
    # in the order they were made, then the seal of the import's batch
    assert actions[-3:] == ["specimen.accessioned", "study.add", "audit.seal"]


# --- The command line ---------------------------------------------------------------------


@pytest.fixture
def cli(fresh_cli):
    fresh_cli("study", "add", "SLE", "--title", "Lupus registry")
    return fresh_cli


def test_cli_dry_run_then_import(cli, clean_sample):
    dry = cli("import", "inventory", clean_sample, "--study", "SLE", "--dry-run", "--json")
    checked = json.loads(dry.stdout)
    assert checked["dry_run"] and (checked["rows"], checked["imported"]) == (401, 0)
    assert json.loads(cli("participant", "list", "--json").stdout) == []
    done = cli("import", "inventory", clean_sample, "--study", "SLE", "--timezone", NEW_YORK)
    assert done.stdout == "" and "imported 401 specimens" in done.stderr
    assert "importing" in done.stderr  # the progress bar, on stderr
    assert cli("scan", "SLE0024-M12-CEL-03").stdout.startswith("SLE-")
    assert "chain intact" in cli("audit", "verify").stderr
    again = cli("import", "inventory", clean_sample, "--study", "SLE", "--json", code=2)
    assert json.loads(again.stdout)["faulty_rows"] == 401


def test_cli_reports_faults_as_a_table(cli):
    result = cli("import", "inventory", SAMPLE, "--study", "SLE", code=2)
    header, first, *_ = result.stdout.splitlines()
    assert header.split() == ["ROW", "LINE", "COLUMN", "VALUE", "REASON"]
    assert first.split()[:2] == ["78", "79"] and "SLE0005-MO-URN-01" in first
    assert "27 faulty" in result.stderr and "nothing was imported" in result.stderr
    dry = cli("import", "inventory", SAMPLE, "--study", "SLE", "--dry-run", code=2)
    assert dry.stdout == result.stdout
    missing = cli("import", "inventory", SAMPLE, "--study", "NOPE", code=4)
    assert "NOPE" in missing.stderr


def test_cli_mapping_file_and_column_flags(cli, tmp_path, clean_sample):
    """Another lab's sheet: other headers and day.month.year dates."""
    text = clean_sample.read_text().replace("Sample ID,Subject,", "Tube,Patient,", 1)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(re.sub(r"(\d\d)/(\d\d)/(\d{4})", r"\2.\1.\3", text))
    mapping = tmp_path / "lab.toml"
    mapping.write_text('date_format = "%d.%m.%Y"\n[columns]\nlegacy_id = "Tube"\n')
    command = ("import", "inventory", renamed, "--study", "SLE", "--mapping", mapping)
    refused = cli(*command, "--dry-run", code=2)
    assert "Subject" in refused.stdout and "no column" in refused.stdout
    mapped = cli(*command, "--column", "subject=Patient", "--dry-run", "--json")
    assert json.loads(mapped.stdout)["rows"] == 401
    flag_wins = cli(*command, "--column", "subject=Patient", "--date-format", "%m/%d/%Y", code=2)
    assert "Date collected" in flag_wins.stdout and "401 faulty" in flag_wins.stderr
    bad = cli(*command, "--column", "subject", code=2)
    assert "FIELD=HEADER" in bad.stderr


@pytest.mark.parametrize("seal_batch", [5000, 2])
def test_record_many_chains_between_single_entries(engine, admin, monkeypatch, seal_batch):
    """Entries `record` has only added to the session come first, then the bulk ones, then
    the next single one; the chain holds across all of them. Entries given by a generator are
    sealed as they come, never more than a seal's batch waiting."""
    monkeypatch.setattr(audit, "SEAL_BATCH", seal_batch)
    change = {"action": "test.bulk", "entity": "test", "reason": "bulk"}
    waiting = []

    def entries(session):
        for i in range(1, 6):
            waiting.append(len(session.info.get(audit._PENDING_KEY, [])))
            yield change | {"entity_id": i}

    with uow(engine) as session:
        audit.record(session, actor=admin, action="test.one", entity="test", entity_id=0)
        audit.record_many(session, actor=admin, entries=entries(session))
        audit.record(session, actor=admin, action="test.one", entity="test", entity_id=6)
    assert max(waiting) <= seal_batch
    with uow(engine, readonly=True) as session:
        audit.verify_chain(session, actor=admin)
    with engine.connect() as connection:
        ids = connection.execute(
            sa.text("SELECT entity_id FROM audit_entry WHERE entity = 'test' ORDER BY id")
        ).scalars()
        assert list(ids) == [str(i) for i in range(7)]
