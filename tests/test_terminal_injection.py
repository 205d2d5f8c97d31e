"""Terminal and log injection: whatever a reason, a name, a scanned cell or an error holds, the
CLI and the workstation show it escaped: one entry on one line, and no control or
bidirectional character reaches the terminal raw."""

import asyncio
import json
import os
import subprocess
import sys
import unicodedata

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from inventory import accession_tube
from textual.widgets import DataTable, Static
from tui_helpers import make_app, scan, sign_in
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.services import custody, participants, storage, studies
from biobank.terminal_text import UNSHOWN, shown, shown_json
from tui.screens.specimen import SpecimenScreen

BIDI_CLASSES = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}
BIDI_MARKS = {"\u061c", "\u200e", "\u200f"}  # ALM, LRM, RLM: bidi controls of class AL, L, R
# A reason typed to forge a second row of the audit log, then reverse what follows it.
FORGED = "fine\n999  2099-01-01 00:00:00  admin  forged\r\tby\u202eevil\u2066 x\u2069\u2028y"


def acts_on_terminal(character: str) -> bool:
    """A control or bidirectional character, or a line separator: what `shown` escapes."""
    return (
        unicodedata.category(character) in ("Cc", "Zl", "Zp")
        or unicodedata.bidirectional(character) in BIDI_CLASSES
        or character in BIDI_MARKS
    )


def raw(output: str) -> list[str]:
    """What in the output a terminal would act on, but the ends of its lines."""
    return [c for c in output if c != "\n" and acts_on_terminal(c)]


def lines(output: str) -> list[str]:
    return output.removesuffix("\n").split("\n")  # not `splitlines`: it breaks at U+2028 too


# --- the escaping itself ---------------------------------------------------------------------


def test_shown_escapes_exactly_controls_bidi_controls_and_line_separators():
    escaped = {chr(c) for c in range(0x110000) if UNSHOWN.match(chr(c))}
    assert escaped == {chr(c) for c in range(0x110000) if acts_on_terminal(chr(c))}


def test_shown_writes_escapes_a_person_can_read():
    assert shown("a\x1b[2J\u202eb\n\t\x9b") == "a\\x1b[2J\\u202eb\\n\\t\\x9b"
    assert shown("Zürich 東京 C:\\data ‍👩‍🔬") == "Zürich 東京 C:\\data ‍👩‍🔬"


@given(st.text())
def test_shown_leaves_nothing_a_terminal_acts_on(text):
    assert not [c for c in shown(text) if acts_on_terminal(c)]


@given(st.text(st.characters().filter(lambda c: not acts_on_terminal(c))))
def test_shown_is_the_identity_on_text_with_nothing_to_escape(text):
    assert shown(text) == text


JSON_VALUES = st.recursive(
    st.none() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


@given(JSON_VALUES)
def test_shown_json_is_the_same_value_with_nothing_raw(value):
    text = shown_json(json.dumps(value, indent=2, ensure_ascii=False))
    assert json.loads(text) == value
    assert raw(text) == []


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def bench(engine, admin, db_url, monkeypatch) -> dict[str, str]:
    """A study SLE with one participant, two 4x4 boxes, and a tube at BOX-0001 A1; the CLI
    pointed at the database."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
        code = participants.add_participant(session, actor=admin, study="SLE").code
        for barcode in ("BOX-0001", "BOX-0002"):
            storage.add_unit(
                session, actor=admin, kind="box", name=barcode, barcode=barcode, grid=(4, 4)
            )
        tube = accession_tube(session, admin, code, destination="BOX-0001", position="A1")
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    return {"tube": tube.accession_id}


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(app, ["-u", "admin", *args])
    assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
    assert raw(result.stdout) == [] and raw(result.stderr) == [], (result.stdout, result.stderr)
    return result


def test_a_forged_reason_stays_on_its_line(bench):
    run("specimen", "move", bench["tube"], "BOX-0002", "--reason", FORGED)
    entries = json.loads(run("audit", "log", "--json").stdout)
    assert entries[0]["reason"] == FORGED  # kept as typed; only shown escaped
    log = lines(run("audit", "log").stdout)
    assert len(log) == 1 + len(entries)  # the header, then one line per entry
    assert "specimen.move" in log[1] and log[1].endswith(shown(FORGED))
    history = lines(run("specimen", "show", bench["tube"]).stdout)
    assert history[-1].endswith(shown(FORGED)) and "moved" in history[-1]


def test_an_escape_sequence_in_a_reason_is_refused_by_name(bench):
    refused = run("specimen", "move", bench["tube"], "BOX-0002", "--reason", "ok\x1b[2J", code=2)
    assert "reason holds a control character (U+001B)" in refused.stderr


def test_a_bidi_override_in_a_title_is_shown_escaped(bench):
    run("study", "add", "SLX", "--title", "Lupus \u202eyrtsiger")
    assert "Lupus \\u202eyrtsiger" in run("study", "list").stdout


def test_escape_sequences_in_a_rack_scan_reach_no_terminal(bench, tmp_path):
    scan_file = tmp_path / "scan.csv"
    scan_file.write_text(
        "Position,Tube ID,Status\x1b]8;;http://evil.example\x07\n"
        f"A1,{bench['tube']},\nA2,AB\x1b[2JCD\u202e,\nA3,\x9b31mred,\n",
        encoding="utf-8",
    )
    shown_lines = run("reconcile", "BOX-0001", str(scan_file), code=1).stdout
    assert "AB\\x1b[2JCD\\u202e" in shown_lines and "\\x9b31MRED" in shown_lines
    report = json.loads(run("reconcile", "BOX-0001", str(scan_file), "--json", code=1).stdout)
    assert {"AB\x1b[2JCD\u202e", "\x9b31MRED"} <= {line["found"] for line in report["lines"]}


def test_an_error_quoting_a_scanned_cell_is_escaped(bench, tmp_path):
    scan_file = tmp_path / "scan.csv"
    scan_file.write_text(f"Rack ID,Position,Tube ID\nX\x1b[2J,A1,{bench['tube']}\n")
    refused = run("reconcile", "BOX-0001", str(scan_file), code=2)
    assert refused.stderr == (
        "biobank: error: row 2: the scan is of rack X\\x1b[2J, not of box BOX-0001\n"
    )


def test_escape_sequences_in_a_legacy_sheet_reach_no_terminal(bench, tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "Sample ID,Subject,Visit,Sample type,Volume (uL),Date collected,Time collected,"
        "Time processed,Freezer,Rack,Box,Position,Thaws,Comments\x1b]8;;http://evil\x07,"
        "Extra\x1b[2J\n"
        "X1\x1b[2J,SLE0001,baseline,SER,500,04/28/2017,09:00,12:00,FRZ-01,R01,BOX-0009,A1,0,"
        "fine,x\n",
        encoding="utf-8",
    )
    checked = run("import", "inventory", str(sheet), "--study", "SLE", "--dry-run", code=2)
    assert "X1\\x1b[2J" in checked.stdout
    assert "Comments\\x1b]8;;http://evil\\x07, Extra\\x1b[2J" in checked.stderr


@pytest.mark.slow
def test_the_audit_log_of_a_real_process_is_one_line_per_entry(bench):
    run("specimen", "move", bench["tube"], "BOX-0002", "--reason", FORGED)

    def biobank(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "biobank", "-u", "admin", *args],
            capture_output=True, check=True, env=os.environ, timeout=60,
        )  # fmt: skip
        out, err = done.stdout.decode(), done.stderr.decode()
        assert raw(out) == [] and raw(err) == []
        return out

    entries = json.loads(biobank("audit", "log", "--json"))
    log = lines(biobank("audit", "log"))
    assert len(log) == 1 + len(entries) and log[1].endswith(shown(FORGED))


# --- the workstation -------------------------------------------------------------------------


def test_the_workstation_shows_free_text_escaped(db_url, admin):
    """A reason as an older tool might have left it (an escape sequence, markup that would stop
    the app) shows escaped in the history, a box's name in the detail, and a scan of markup
    as it was scanned."""
    reason = "first\n[/]second\r\t\u202eevil\x1b[2J"
    app = make_app(db_url, admin)
    engine = app.database.engine
    with uow(engine) as session:
        box = storage.add_unit(session, actor=admin, kind="box", name="Bench", grid=(9, 9))
        other = storage.add_unit(session, actor=admin, kind="box", name="\u2066Spare", grid=(9, 9))
        code = session.execute(sa.text("SELECT code FROM participant ORDER BY code")).scalar()
        tube = accession_tube(session, admin, code, destination=box.barcode).accession_id
        custody.move(session, actor=admin, accession=tube, destination=other.barcode, reason="x")
    with engine.begin() as connection:  # past the check every unit of work makes
        connection.execute(
            sa.text("UPDATE specimen_event SET reason = :reason WHERE reason = 'x'"),
            {"reason": reason},
        )

    async def scenario():
        async with app.run_test(size=(200, 40), notifications=True) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, tube)
            assert isinstance(app.screen, SpecimenScreen)
            table = app.screen.query_one("#history", DataTable)
            cells = [str(table.get_row_at(i)[-1]) for i in range(table.row_count)]
            assert shown(reason) in cells
            drawn = "\n".join(table.render_line(y).text for y in range(table.size.height))
            assert shown(reason) in drawn and raw(drawn) == []
            detail = str(app.screen.query_one("#detail", Static).content)
            assert "Location \\u2066Spare A1" in detail and raw(detail) == []
            await scan(app, pilot, "[/]X[/]")
            notices = [str(toast.render()) for toast in app.screen.query("Toast")]
            assert any("'[/]X[/]' is not a known" in notice for notice in notices), notices
        engine.dispose()

    asyncio.run(scenario())
