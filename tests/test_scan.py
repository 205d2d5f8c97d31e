"""The scan resolver: one function that says what a scanned string names."""

import json
import unicodedata

import pytest
import sqlalchemy as sa
from inventory import seed_inventory, serum
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import make_engine, uow
from biobank.domain.identifiers import format_specimen_id
from biobank.errors import DatabaseUnavailable
from biobank.models import Specimen
from biobank.services import lineage, scan, specimen_read, users


@pytest.fixture
def scanned(engine, admin):
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = serum(session, admin, destination=layout["boxes"][0], legacy_id="SLE0001-BA-SER-01")
        users.add_user(session, actor=admin, username="tina", role="technician", badge="badge-77")

    def resolve(text: str, prefix: str = ""):
        with uow(engine, lookup=True) as session:  # as the TUI and `biobank scan` resolve
            return scan.resolve_scan(session, actor=admin, scanned=text, scanner_prefix=prefix)

    return resolve, tube, layout


def _wrong_check(accession_id: str) -> str:
    return accession_id[:-1] + ("B" if accession_id[-1] != "B" else "C")


TYPES = {
    "specimen": scan.SpecimenScan,
    "unit": scan.UnitScan,
    "participant": scan.ParticipantScan,
    "user": scan.BadgeScan,
    "misread": scan.MisreadScan,
    "unknown": scan.UnknownScan,
}


def test_every_kind_of_scan(scanned):
    resolve, tube, layout = scanned
    cases = {
        tube.accession_id: ("specimen", tube.accession_id),
        f"  {tube.accession_id.lower()}\r\n": ("specimen", tube.accession_id),  # Caps Lock
        f"]Q1{tube.accession_id}": ("specimen", tube.accession_id),  # AIM identifier
        "SLE0001-BA-SER-01": ("specimen", tube.accession_id),  # legacy ID
        layout["boxes"][0]: ("unit", None),
        layout["freezer"]: ("unit", None),
        "sle-0001": ("participant", None),
        "BADGE-77": ("user", None),
        _wrong_check(tube.accession_id): ("misread", None),
        next(filter(None, (format_specimen_id("SLE", n) for n in range(9_000_000, 9_000_002)))): (
            "unknown",
            None,
        ),
        "": ("unknown", None),
    }
    for text, (kind, accession) in cases.items():
        result = resolve(text)
        assert result.kind == kind and isinstance(result, TYPES[kind]), (text, result)
        if accession:
            assert result.specimen.accession_id == accession
    assert "MISREAD" in resolve(_wrong_check(tube.accession_id)).message
    for inside in ("\x1d", "\x7f", "\x85"):  # a GS separator, DEL, a C1 control: garbled
        garbled = resolve(f"{tube.accession_id[:4]}{inside}{tube.accession_id[4:]}")
        assert garbled.kind == "misread" and f"(U+{ord(inside):04X})" in garbled.message
    assert resolve("BADGE-77").username == "tina"
    assert isinstance(resolve(layout["boxes"][0]), scan.BoxScan)
    assert not isinstance(resolve(layout["freezer"]), scan.BoxScan)
    assert resolve(f"#{tube.accession_id}", prefix="#").kind == "specimen"


def test_a_scan_that_opens_a_tube_or_a_box_carries_what_its_screen_shows(scanned, engine, admin):
    _, tube, layout = scanned
    box = layout["boxes"][0]
    with uow(engine, lookup=True) as session:
        opened = [
            scan.resolve_scan(session, actor=admin, scanned=text, views=True)
            for text in (tube.accession_id, box)
        ]
        found = [
            scan.resolve_scan(session, actor=admin, scanned=t) for t in (tube.accession_id, box)
        ]
        expected = scan.specimen_view(session, actor=admin, accession=tube.accession_id)
    tube_scan, box_scan = opened
    assert isinstance(tube_scan, scan.SpecimenScan) and tube_scan.view == expected
    assert expected.detail.specimen.accession_id == tube.accession_id
    assert expected.consent.participant_code == "SLE-0001" and not expected.on_pull_list
    assert isinstance(box_scan, scan.BoxScan) and box_scan.view.unit.barcode == box
    assert [c.accession_id for c in box_scan.view.cells if c.accession_id] == [tube.accession_id]
    assert [f.view for f in found] == [None, None]  # for a screen that only takes the scan


def test_a_scan_reads_a_tube_as_every_other_read_does(scanned, engine, admin):
    """Scans read through the driver's own cursor; the result is the service's read model."""
    resolve, tube, _ = scanned
    with uow(engine) as session:
        (child,) = lineage.aliquot(
            session, actor=admin, parent=tube.accession_id, count=1, volume=100
        )
        unplaced = serum(session, admin)
    for read in (tube, child, unplaced):
        with uow(engine, readonly=True) as session:
            (expected,) = specimen_read.specimens_where(session, Specimen.id == read.id)
        found = resolve(read.accession_id).specimen
        assert found == expected and found.collected_at.tzinfo is not None
    assert resolve(child.accession_id).specimen.parent_accession_id == tube.accession_id
    assert resolve(unplaced.accession_id).specimen.location is None


def test_a_lookup_sees_each_commit_and_keeps_nothing(scanned, engine, admin):
    resolve, tube, _ = scanned
    with uow(engine, lookup=True) as session:
        before = specimen_read.find_specimen(session, tube.accession_id).quantity
        with uow(engine) as other:  # committed between the lookup's two statements
            specimen_read.get_specimen(other, tube.accession_id).quantity = before - 10
        assert specimen_read.find_specimen(session, tube.accession_id).quantity == before - 10
    assert resolve(tube.accession_id).specimen.quantity == before - 10
    with pytest.raises(RuntimeError, match="changes nothing"):  # no transaction to undo it
        with uow(engine, lookup=True) as session:
            specimen_read.get_specimen(session, tube.accession_id).notes = "not kept"
            session.flush()
    with pytest.raises(RuntimeError, match="changes nothing"):
        with uow(engine, lookup=True) as session:
            session.execute(sa.update(Specimen).values(notes="not kept"))
    with uow(engine, readonly=True) as session:
        assert specimen_read.get_specimen(session, tube.accession_id).notes is None


def _in_transaction(session) -> bool:
    driver = session.connection().connection.driver_connection
    if hasattr(driver, "in_transaction"):  # sqlite3
        return driver.in_transaction
    return driver.info.transaction_status.name != "IDLE"  # psycopg


def test_a_lookup_opens_no_transaction_and_leaves_none_behind(scanned, engine):
    _, tube, _ = scanned
    engine.dispose()  # one pooled connection: the lookup's is the next unit of work's
    with uow(engine, lookup=True) as session:
        specimen_read.find_specimen(session, tube.accession_id)
        assert not _in_transaction(session)
    with uow(engine, readonly=True) as session:  # one snapshot again, on the same connection
        specimen_read.find_specimen(session, tube.accession_id)
        assert _in_transaction(session)


def test_a_scans_driver_error_is_reported_as_any_other(tmp_path):
    """The scan's own cursor: a driver error is the same one-line error as elsewhere."""
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables
    with pytest.raises(DatabaseUnavailable, match="no such table: specimen"):
        with uow(engine, lookup=True) as session:
            specimen_read.find_specimen(session, "SLE-0000001M")
    engine.dispose()


def test_scan_command(scanned, monkeypatch, db_url):
    _, tube, _ = scanned
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()
    found = runner.invoke(app, ["-u", "admin", "scan", tube.accession_id.lower(), "--json"])
    assert found.exit_code == 0, found.stderr
    assert json.loads(found.stdout)["specimen"]["position"] == "A1"
    misread = runner.invoke(app, ["-u", "admin", "scan", _wrong_check(tube.accession_id)])
    assert misread.exit_code == 2 and "MISREAD" in misread.stderr
    unknown = runner.invoke(app, ["-u", "admin", "scan", "NOTHING-HERE"])
    assert unknown.exit_code == 4
    helped = runner.invoke(app, ["scan", "--help"])  # loaded as it runs, with its own options
    assert helped.exit_code == 0 and "--json" in helped.stdout
    assert "completion" not in helped.stdout  # the root's option, not each command's


def test_the_control_characters_a_scan_is_checked_for_are_unicodes():
    """`scan.CONTROL` is Unicode's category Cc, written out as ranges for speed."""
    controls = {c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"}
    assert {c for c in range(0x110000) if scan.CONTROL.match(chr(c))} == controls
