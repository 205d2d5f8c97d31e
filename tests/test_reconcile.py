"""Box reconciliation against scanner exports (tests/data/rack_scan_*.csv), on both engines."""

import codecs
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from inventory import accession_tube, one_shelf_freezer
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.vocabulary import Role
from biobank.errors import (
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PositionOccupied,
    ValidationError,
)
from biobank.models import AuditEntry, Specimen
from biobank.services import audit, custody, participants, reconcile, specimens, storage, studies
from biobank.services.specimen_read import specimen_read

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "rack_scan_BOX-0001.csv"  # a copy of the synthetic sample export
MOVES = DATA / "rack_scan_BOX-0101.csv"  # the sample's shape: A01, NO TUBE, NO READ
OTHER_SCANNER = DATA / "rack_scan_BOX-0101_other_scanner.csv"  # A1, other columns and words

# What BOX-0101 (4x4) holds before each test, by legacy ID; SLE0101-MO-SER-01 is in another box.
LAYOUT = {
    "A1": "SLE0101-BA-SER-01",
    "A2": "SLE0101-BA-SER-02",
    "A3": "SLE0101-BA-SER-03",
    "B1": "SLE0101-BA-PL1-01",
    "B2": "SLE0101-BA-PL1-02",
    "C1": "SLE0101-BA-BUF-01",
}
ELSEWHERE = "SLE0101-MO-SER-01"


@pytest.fixture
def inventory(engine, admin):
    """BOX-0101 and BOX-0102 in one freezer, a box of a templated freezer holding one tube;
    returns that box's and the freezer's barcodes, the participant, and every tube's accession
    ID by legacy ID."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
        code = participants.add_participant(session, actor=admin, study="SLE").code
        freezer = storage.add_unit(session, actor=admin, kind="freezer", name="-80 #1")
        for barcode in ("BOX-0101", "BOX-0102"):
            storage.add_unit(
                session,
                actor=admin,
                kind="box",
                name=barcode,
                parent=freezer.barcode,
                barcode=barcode,
                grid=(4, 4),
            )
        templated = one_shelf_freezer(session, admin, "-80 #2")
        (other,) = [
            n.unit.barcode
            for n in storage.storage_tree(session, actor=admin, root=templated.barcode)
            if n.unit.holds_specimens
        ]
        ids = {}
        for legacy, position in [*((v, k) for k, v in LAYOUT.items()), (ELSEWHERE, None)]:
            ids[legacy] = accession_tube(
                session,
                admin,
                code,
                specimen_type=legacy.split("-")[2],
                legacy_id=legacy,
                destination="BOX-0101" if position else None,
                position=position,
            ).accession_id
        custody.move(session, actor=admin, accession=ids[ELSEWHERE], destination=other)
    return {"other_box": other, "ids": ids, "participant": code, "freezer": freezer.barcode}


def _reconcile(engine, actor, path, *, box="BOX-0101", commit=False, text=None):
    with uow(engine, readonly=not commit) as session:
        return reconcile.reconcile_box(
            session,
            actor=actor,
            box=box,
            scan=path.read_text() if text is None else text,
            source=None if path is None else path.name,
            commit=commit,
        )


def _statuses(report) -> dict[str, str]:
    return {line.position: line.status for line in report.lines}


def _places(engine) -> dict[str, tuple[str | None, str | None, str]]:
    """Every tube's (box, position, status), by legacy ID or accession ID."""
    with uow(engine, readonly=True) as session:
        reads = [specimen_read(session, s) for s in session.exec(sa.select(Specimen)).scalars()]
    return {r.legacy_id or r.accession_id: (r.box_barcode, r.position, r.status) for r in reads}


def _audit_count(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar()


def _check_free_slots(engine, admin, *boxes):
    """The maintained free-slot count of each box equals its empty positions."""
    with uow(engine, readonly=True) as session:
        for barcode in boxes:
            view = storage.box_view(session, actor=admin, barcode=barcode)
            empty = sum(cell.accession_id is None for cell in view.cells)
            assert view.unit.free_slots == empty, barcode


# --- Reading scanner files ------------------------------------------------------------------


def test_reads_the_sample_export():
    rows = reconcile.read_rack_scan(SAMPLE.read_text())
    assert len(rows) == 81
    first = rows[0]
    assert (first.row, first.rack, first.position) == (2, "BOX-0001", "A01")
    assert (first.reading, first.code) == ("tube", "SLE0001-BA-CEL-01")
    unread = [r.position for r in rows if r.reading == "unread"]
    assert unread == ["B01", "B06", "D07", "E09", "F03", "G01", "G04", "G06"]
    assert {r.reading for r in rows} == {"tube", "unread"}


def test_reads_other_scanners_columns_and_words():
    rows = reconcile.read_rack_scan(OTHER_SCANNER.read_text())
    readings = {r.position: r.reading for r in rows}
    assert readings == {
        "A1": "tube",
        "A2": "unread",  # ERROR
        "A3": "tube",
        "A4": "empty",  # EMPTY
        "B1": "unread",  # NOREAD
        "B2": "unread",  # ???
        "B3": "tube",
        "B4": "empty",  # No Tube
        "C1": "tube",  # a misread ID is a tube until looked up
        "C2": "empty",  # NOTUBE
        "C3": "empty",  # blank
        "C4": "unread",  # blank, status No Read
        "D1": "empty",
        "D2": "empty",
        "D3": "tube",
    }
    d3 = rows[-1]
    assert (d3.row, d3.code, d3.rack) == (17, "SLE0101-MO-SER-01", "BOX-0101")  # blank line 16


def test_reads_semicolons_tabs_and_encodings():
    text = "\ufeffWell;Tube Barcode;Result\nA1;X-1;OK\nA2;;NO READ\nA3;X-2;EMPTY\n"
    rows = reconcile.read_rack_scan(text)
    assert [(r.position, r.reading, r.code) for r in rows] == [
        ("A1", "tube", "X-1"),
        ("A2", "unread", ""),
        ("A3", "unread", "X-2"),  # a code where the scanner saw no tube: trusted neither
    ]
    assert reconcile.read_rack_scan("Pos\tBarcode\nB2\tY\n")[0].code == "Y"
    utf16 = codecs.BOM_UTF16_LE + "Position,Tube ID\nA1,Z\n".encode("utf-16-le")
    assert reconcile.scan_text(utf16) == "Position,Tube ID\nA1,Z\n"
    assert reconcile.scan_text("Position,Tube ID\nA1,Ü\n".encode("latin-1")).endswith("Ü\n")


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("", "file", "empty"),
        ("Rack,Tube ID\nBOX-0101,X\n", "columns", "row 1: the scan has no position column"),
        ("Position,Status\nA1,OK\n", "columns", "no tube column"),
        ("Position,Tube ID\nA1,X\n,Y\n", "position", "row 3: the row has no position"),
    ],
)
def test_unreadable_files_are_refused(text, field, message):
    with pytest.raises(ValidationError, match=message) as caught:
        reconcile.read_rack_scan(text)
    assert caught.value.field == field


# --- Comparing --------------------------------------------------------------------------------


def test_dry_run_reports_each_status_and_changes_nothing(engine, admin, inventory):
    ids, other = inventory["ids"], inventory["other_box"]
    before, audited = _places(engine), _audit_count(engine)
    report = _reconcile(engine, admin, MOVES)
    assert _statuses(report) == {
        "A1": "match",
        "A2": "moved",
        "A3": "moved",
        "A4": "empty",
        "B1": "moved",
        "B2": "match",
        "B3": "empty",
        "B4": "empty",
        "C1": "missing",
        "C2": "empty",
        "C3": "empty",
        "C4": "empty",
        "D1": "empty",
        "D2": "empty",
        "D3": "empty",
        "D4": "moved",
    }
    assert report.counts == {
        "match": 2,
        "moved": 4,
        "unexpected": 0,
        "missing": 1,
        "unread": 0,
        "empty": 9,
    }
    b1 = report.lines[4]
    assert (b1.expected, b1.found) == (ids["SLE0101-BA-PL1-01"], ids[ELSEWHERE])
    assert b1.note == f"recorded at {other} A1"
    assert report.lines[8].expected == ids["SLE0101-BA-BUF-01"]
    assert {(m.accession_id, m.from_location, m.to_position) for m in report.moves} == {
        (ids["SLE0101-BA-SER-03"], "BOX-0101 A3", "A2"),
        (ids["SLE0101-BA-SER-02"], "BOX-0101 A2", "A3"),
        (ids[ELSEWHERE], f"{other} A1", "B1"),
        (ids["SLE0101-BA-PL1-01"], "BOX-0101 B1", "D4"),
    }
    assert report.missing == [ids["SLE0101-BA-BUF-01"]]
    assert not report.in_agreement and not report.committed

    other_report = _reconcile(engine, admin, OTHER_SCANNER)
    assert other_report.counts == {
        "match": 2,
        "moved": 1,
        "unexpected": 1,
        "missing": 0,
        "unread": 6,
        "empty": 6,
    }
    lines = {line.position: line for line in other_report.lines}
    assert (lines["B3"].status, lines["B3"].found) == ("unexpected", "UNKNOWN-0042")
    assert (lines["C1"].status, lines["C1"].found) == ("unread", "SLE-0000001Z")
    assert "check character" in lines["C1"].note
    assert lines["D4"].note == "not in the scan file"
    assert lines["B2"].expected == ids["SLE0101-BA-PL1-02"]
    assert other_report.missing == []
    assert _places(engine) == before and _audit_count(engine) == audited


def test_commit_applies_moves_and_missing_in_one_audited_transaction(engine, admin, inventory):
    ids, other = inventory["ids"], inventory["other_box"]
    report = _reconcile(engine, admin, MOVES, commit=True)
    assert report.committed
    places = _places(engine)
    assert places["SLE0101-BA-SER-01"] == ("BOX-0101", "A1", "available")
    assert places["SLE0101-BA-SER-03"] == ("BOX-0101", "A2", "available")  # swapped
    assert places["SLE0101-BA-SER-02"] == ("BOX-0101", "A3", "available")
    assert places[ELSEWHERE] == ("BOX-0101", "B1", "available")
    assert places["SLE0101-BA-PL1-01"] == ("BOX-0101", "D4", "available")
    assert places["SLE0101-BA-BUF-01"] == (None, None, "missing")
    _check_free_slots(engine, admin, "BOX-0101", other)

    with uow(engine, readonly=True) as session:
        moved = specimens.show_specimen(session, actor=admin, accession=ids[ELSEWHERE])
        lost = specimens.show_specimen(session, actor=admin, accession=ids["SLE0101-BA-BUF-01"])
        (entry,) = audit.audit_log(session, actor=admin, entity="storage_unit", limit=1)
        assert audit.verify_chain(session, actor=admin).entries > 0
    last = moved.events[-1]
    assert (last.event_type, last.from_location, last.to_location) == (
        "moved",
        f"{other} A1",
        "BOX-0101 B1",
    )
    assert (lost.events[-1].event_type, lost.events[-1].from_location) == (
        "missing",
        "BOX-0101 C1",
    )
    assert entry.action == "storage.reconcile"
    assert entry.after["counts"]["moved"] == 4
    assert entry.after["source"] == MOVES.name
    assert entry.after["missing"] == [ids["SLE0101-BA-BUF-01"]]

    again = _reconcile(engine, admin, MOVES)
    assert again.in_agreement
    assert again.counts["match"] == 6 and again.counts["empty"] == 10
    assert not again.moves and not again.missing


def test_unread_and_unexpected_positions_change_nothing(engine, admin, inventory):
    before = _places(engine)
    report = _reconcile(engine, admin, OTHER_SCANNER, commit=True)
    assert report.counts["unread"] == 6
    after = _places(engine)
    for position, legacy in LAYOUT.items():  # ERROR, NOREAD, ???, misread: none marked missing
        assert after[legacy] == before[legacy] == ("BOX-0101", position, "available")
    assert after[ELSEWHERE] == ("BOX-0101", "D3", "available")
    _check_free_slots(engine, admin, "BOX-0101", inventory["other_box"])
    with uow(engine, readonly=True) as session:
        (entry,) = audit.audit_log(session, actor=admin, entity="storage_unit", limit=1)
    assert entry.action == "storage.reconcile"
    assert {d["position"] for d in entry.after["differences"]} == {
        "A2",
        "B1",
        "B2",
        "B3",
        "C1",
        "C4",
        "D3",
        "D4",
    }


def test_accession_ids_misreads_and_tubes_found_again(engine, admin, inventory):
    ids = inventory["ids"]
    a1, c1 = ids["SLE0101-BA-SER-01"], ids["SLE0101-BA-BUF-01"]
    wrong = a1[:-1] + ("0" if a1[-1] != "0" else "1")
    with uow(engine) as session:
        custody.mark_missing(session, actor=admin, accession=c1, reason="not in its box")
    text = "\n".join(
        [
            "Position,Tube ID",
            f"A1,]Q1{a1.lower()}",  # AIM identifier and Caps Lock, as scanners send them
            f"A2,{wrong}",  # shaped like an accession ID, wrong check character
            f"C2,{c1}",  # the missing tube turned up
            f"B1,{ELSEWHERE}",  # in place of a tube seen nowhere
        ]
    )
    report = _reconcile(engine, admin, None, text=text, commit=True)
    lines = {line.position: line for line in report.lines}
    assert (lines["A1"].status, lines["A1"].found) == ("match", a1)
    assert (lines["A2"].status, lines["A2"].found) == ("unread", wrong)
    assert (lines["C2"].status, lines["C2"].note) == ("moved", "recorded as missing")
    b1 = ids["SLE0101-BA-PL1-01"]
    assert lines["B1"].note == f"recorded at {inventory['other_box']} A1; {b1} not found: missing"
    assert report.missing == [b1]
    places = _places(engine)
    assert places["SLE0101-BA-BUF-01"] == ("BOX-0101", "C2", "available")
    assert places["SLE0101-BA-SER-02"] == ("BOX-0101", "A2", "available")  # not marked missing
    assert places["SLE0101-BA-PL1-02"] == ("BOX-0101", "B2", "available")  # not in the file
    assert places["SLE0101-BA-PL1-01"] == (None, None, "missing")
    assert places[ELSEWHERE] == ("BOX-0101", "B1", "available")
    with uow(engine, readonly=True) as session:
        found = specimens.show_specimen(session, actor=admin, accession=c1)
    assert [e.event_type for e in found.events][-2:] == ["missing", "placed"]


def test_checked_out_tubes_keep_or_release_their_held_position(engine, admin, inventory):
    ids = inventory["ids"]
    b2 = ids["SLE0101-BA-PL1-02"]
    with uow(engine) as session:
        custody.check_out(session, actor=admin, accession=b2)
    held = MOVES.read_text().replace("SLE0101-BA-PL1-02,OK", ",NO TUBE")
    report = _reconcile(engine, admin, MOVES, text=held)
    line = report.lines[5]
    assert (line.position, line.status, line.expected) == ("B2", "empty", b2)
    assert line.note == "checked out: its position is held"
    assert report.missing == [ids["SLE0101-BA-BUF-01"]] and report.released == []

    taken = "Position,Tube ID\n" + "\n".join(
        f"{p},{legacy}" for p, legacy in LAYOUT.items() if p not in {"B2", "C1"}
    )
    taken += f"\nB2,{ids['SLE0101-BA-BUF-01']}\n"  # someone used the empty-looking well
    report = _reconcile(engine, admin, None, text=taken, commit=True)
    assert (
        report.lines[5].note
        == f"recorded at BOX-0101 C1; {b2} checked out: its held position is released"
    )
    assert report.released == [b2] and report.missing == []
    assert _places(engine)["SLE0101-BA-PL1-02"] == (None, None, "checked_out")
    assert _places(engine)["SLE0101-BA-BUF-01"] == ("BOX-0101", "B2", "available")
    _check_free_slots(engine, admin, "BOX-0101")
    with uow(engine) as session:
        back = custody.check_in(session, actor=admin, accession=b2, destination="BOX-0101")
    assert back.position == "A4"


@pytest.mark.parametrize("order", [1, -1])
def test_rearrange_swaps_in_any_order(engine, admin, inventory, order):
    ids = inventory["ids"]
    a1, a2, b1 = (ids[LAYOUT[p]] for p in ("A1", "A2", "B1"))
    placements = dict(list({a1: "A2", a2: "A1"}.items())[::order])
    with uow(engine) as session:
        moved = custody.rearrange(session, actor=admin, box="box-0101", placements=placements)
    assert {(m.accession_id, m.position) for m in moved} == {(a1, "A2"), (a2, "A1")}
    _check_free_slots(engine, admin, "BOX-0101")
    with pytest.raises(PositionOccupied, match=f"BOX-0101 B1 is occupied by {b1}"):
        with uow(engine) as session:
            custody.rearrange(session, actor=admin, box="BOX-0101", placements={a1: "B1"})
    with pytest.raises(ValidationError, match="both placed at D4"):
        with uow(engine) as session:
            custody.rearrange(session, actor=admin, box="BOX-0101", placements={a1: "D4", b1: "D4"})
    with pytest.raises(ValidationError, match="placed twice"):
        with uow(engine) as session:
            custody.rearrange(
                session, actor=admin, box="BOX-0101", placements={a1: "D4", LAYOUT["A1"]: "D3"}
            )


def test_a_tube_that_cannot_go_missing_stops_the_commit(engine, admin, inventory):
    with uow(engine) as session:
        custody.deplete(session, actor=admin, accession=inventory["ids"]["SLE0101-BA-BUF-01"])
    report = _reconcile(engine, admin, MOVES)
    assert "cannot be marked missing" in report.lines[8].note
    before, audited = _places(engine), _audit_count(engine)
    with pytest.raises(InvalidTransition, match="depleted and cannot become missing"):
        _reconcile(engine, admin, MOVES, commit=True)
    assert _places(engine) == before and _audit_count(engine) == audited


@pytest.mark.parametrize(
    ("box", "text", "field", "message"),
    [
        ("BOX-0102", None, "rack", "row 2: the scan is of rack BOX-0101, not of box BOX-0102"),
        ("BOX-0101", "Position,Tube ID\nA1,X\nE1,Y\n", "position", "row 3: position E1 is outside"),
        ("BOX-0101", "Position,Tube ID\nA1,X\nA01,Y\n", "position", "row 3: .*also on row 2"),
        ("BOX-0101", "Position,Tube ID\nA1,X\nA0X,Y\n", "position", "row 3: 'A0X' is not a"),
        (
            "BOX-0101",
            "Position,Tube ID\nA1,SLE0101-BA-SER-01\nD4,SLE0101-BA-SER-01\n",
            "tube",
            r"row 3: SLE-\w+ is read at A1 \(row 2\) and again at D4",
        ),
    ],
)
def test_files_that_do_not_fit_the_box_are_refused(
    engine, admin, inventory, box, text, field, message
):
    before, audited = _places(engine), _audit_count(engine)
    with pytest.raises(ValidationError, match=message) as caught:
        _reconcile(engine, admin, MOVES, box=box, text=text, commit=True)
    assert caught.value.field == field
    assert _places(engine) == before and _audit_count(engine) == audited


def test_only_boxes_and_only_movers_commit(engine, actors, inventory):
    admin, pi, tech = actors[Role.admin], actors[Role.pi], actors[Role.technician]
    with pytest.raises(NotFound):
        _reconcile(engine, admin, MOVES, box="BOX-9999")
    with pytest.raises(ValidationError, match="is a freezer, not a box"):
        _reconcile(engine, admin, MOVES, box=inventory["freezer"])
    assert not _reconcile(engine, pi, MOVES).committed
    with pytest.raises(PermissionDenied):
        _reconcile(engine, pi, MOVES, commit=True)
    assert _reconcile(engine, tech, MOVES, commit=True).committed


def test_the_sample_export_against_its_box(engine, admin, inventory):
    """The real sample: three tubes recorded, one where the scanner could not read."""
    code = inventory["participant"]
    with uow(engine) as session:
        storage.add_unit(
            session, actor=admin, kind="box", name="B1", barcode="BOX-0001", grid=(9, 9)
        )
        for legacy, position in [
            ("SLE0001-BA-CEL-01", "A1"),
            ("SLE0001-BA-CEL-02", "A2"),
            ("SLE0001-BA-SER-09", "B1"),
        ]:
            specimens.accession(
                session,
                actor=admin,
                participant=code,
                specimen_type=legacy.split("-")[2],
                quantity=1,
                unit="mL",
                legacy_id=legacy,
                destination="BOX-0001",
                position=position,
            )
    report = _reconcile(engine, admin, SAMPLE, box="BOX-0001", commit=True)
    assert report.counts == {
        "match": 2,
        "moved": 0,
        "unexpected": 71,
        "missing": 0,
        "unread": 8,
        "empty": 0,
    }
    assert _places(engine)["SLE0001-BA-SER-09"] == ("BOX-0001", "B1", "available")


# --- The command ------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, db_url, inventory):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, ["reconcile", *args])
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return run


def test_command_dry_run_commit_and_exit_codes(cli, engine, inventory):
    ids = inventory["ids"]
    before = _places(engine)
    dry = cli("BOX-0101", str(MOVES), code=1)
    table = dry.stdout.splitlines()
    assert table[0].split() == ["POSITION", "STATUS", "EXPECTED", "PRINTED", "FOUND", "NOTE"]
    a1 = ids[LAYOUT["A1"]]
    assert table[1].split()[:5] == ["A1", "match", a1, LAYOUT["A1"], a1]
    assert table[-1] == "match 2  moved 4  unexpected 0  missing 1  unread 0  empty 9"
    assert "dry run, nothing changed" in dry.stderr
    assert _places(engine) == before

    shown = json.loads(cli("BOX-0101", str(OTHER_SCANNER), "--json", code=1).stdout)
    assert shown["counts"]["unread"] == 6 and shown["in_agreement"] is False
    assert len(shown["lines"]) == 16

    committed = cli("box-0101", str(MOVES), "--commit", "--reason", "quarterly check", code=1)
    assert "BOX-0101 reconciled: 4 moved, 1 marked missing" in committed.stderr
    assert _places(engine)["SLE0101-BA-BUF-01"] == (None, None, "missing")
    agreed = cli("BOX-0101", str(MOVES), "--json")
    assert json.loads(agreed.stdout)["in_agreement"] is True

    refused = cli("BOX-0102", str(MOVES), "--commit", code=2)
    assert refused.stdout == ""
    assert "scan is of rack BOX-0101, not of box BOX-0102" in refused.stderr


def test_a_tube_seen_nowhere_is_missing_whatever_stands_in_its_place(
    cli, engine, admin, inventory, tmp_path
):
    """Issue 23: an unknown tube at B2 hid the loss of B2's tube, and the summary counted
    missing positions while the commit counted missing tubes."""
    ids = inventory["ids"]
    b1, b2, c1 = (ids[LAYOUT[p]] for p in ("B1", "B2", "C1"))
    rows = {
        "A1": ",NO READ",  # proves nothing: A1's tube stays
        "A2": f"{LAYOUT['A3']},OK",  # A2 and A3 swapped
        "A3": f"{LAYOUT['A2']},OK",
        "B1": f"{ELSEWHERE},OK",  # moved here from the other box; B1's tube seen nowhere
        "B2": "QQQ-NOT-OURS-7,OK",  # not ours; B2's tube seen nowhere
        "C1": ",NO TUBE",  # C1's tube seen nowhere
    }
    text = "Position,Tube ID,Status\n" + "".join(
        f"{r}{c},{rows.get(f'{r}{c}', ',NO TUBE')}\n" for r in "ABCD" for c in "1234"
    )
    scan = tmp_path / "rack.csv"
    scan.write_text(text)

    report = _reconcile(engine, admin, scan)
    summary = "match 0  moved 3  unexpected 1  missing 3  unread 1  empty 10"
    assert "  ".join(f"{k} {v}" for k, v in report.counts.items()) == summary
    assert report.missing == [b1, b2, c1]
    lines = {line.position: line for line in report.lines}
    shown = {p: (x.status, x.expected, x.printed, x.found) for p, x in lines.items()}
    assert shown["A1"] == ("unread", ids[LAYOUT["A1"]], LAYOUT["A1"], None)
    assert shown["B1"] == ("moved", b1, LAYOUT["B1"], ids[ELSEWHERE])
    assert shown["B2"] == ("unexpected", b2, LAYOUT["B2"], "QQQ-NOT-OURS-7")
    assert shown["C1"] == ("missing", c1, LAYOUT["C1"], None)
    assert lines["B2"].note == f"not in the inventory; {b2} not found: missing"
    assert lines["B1"].note == f"recorded at {inventory['other_box']} A1; {b1} not found: missing"

    dry = cli("BOX-0101", str(scan), code=1).stdout.splitlines()
    assert dry[6].split()[:5] == ["B2", "unexpected", b2, LAYOUT["B2"], "QQQ-NOT-OURS-7"]
    assert dry[-1] == summary
    committed = cli("BOX-0101", str(scan), "--commit", code=1)
    assert committed.stdout.splitlines()[-1] == summary
    counts = report.counts
    assert f"{counts['moved']} moved, {counts['missing']} marked missing" in committed.stderr

    places = _places(engine)
    for position in ("B1", "B2", "C1"):
        assert places[LAYOUT[position]] == (None, None, "missing")
    assert places[LAYOUT["A1"]] == ("BOX-0101", "A1", "available")
    assert places[LAYOUT["A2"]] == ("BOX-0101", "A3", "available")
    assert places[LAYOUT["A3"]] == ("BOX-0101", "A2", "available")
    assert places[ELSEWHERE] == ("BOX-0101", "B1", "available")
    assert ("BOX-0101", "B2") not in {place[:2] for place in places.values()}  # none placed
    _check_free_slots(engine, admin, "BOX-0101", inventory["other_box"])


def test_command_help_documents_exit_codes(cli):
    assert "Exit code: 0 when every position agrees" in " ".join(cli("--help").stdout.split())
