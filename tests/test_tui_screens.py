"""The freezer tree, a participant, box reconciliation and the print queue, driven as a
technician would: arrow keys and Enter, scans in bursts, typing at human speed."""

import asyncio
import shutil
from pathlib import Path

from inventory import accession_tube, one_shelf_freezer
from textual.widgets import DataTable, Static, Tree
from tui_helpers import make_app, scan, settle, sign_in, type_text, until

from biobank.db import uow
from biobank.services import participants, storage, users
from biobank.services.scan import specimen_view
from biobank.services.specimen_read import find_specimen
from biobank.settings import PrinterProfile
from tui.screens.box import BoxScreen
from tui.screens.freezers import FreezerScreen
from tui.screens.participant import ParticipantScreen
from tui.screens.print_queue import PrintQueueScreen
from tui.screens.reconcile import Confirm, ReconcileScreen
from tui.screens.specimen import SpecimenScreen
from tui.widgets.box_grid import CELL, BoxGrid
from tui.widgets.key_bar import KeyBar

DATA = Path(__file__).parent / "data"
# What BOX-0301 (4x4) holds, by legacy ID; SLE0301-MO-SER-01 is in BOX-0302.
LAYOUT = {
    "A1": "SLE0301-BA-SER-01",
    "A2": "SLE0301-BA-SER-02",
    "A3": "SLE0301-BA-SER-03",
    "B1": "SLE0301-BA-PL1-01",
    "B2": "SLE0301-BA-PL1-02",
    "C1": "SLE0301-BA-BUF-01",
}
ELSEWHERE = "SLE0301-MO-SER-01"


def _first_participant(engine, admin) -> str:
    with uow(engine, readonly=True) as session:
        return participants.list_participants(session, actor=admin, limit=1)[0].code


def _boxes_to_reconcile(engine, admin) -> dict[str, str]:
    """BOX-0301 holding LAYOUT and BOX-0302 holding ELSEWHERE at A1; every tube's accession
    ID by legacy ID."""
    code = _first_participant(engine, admin)
    with uow(engine) as session:
        freezer = storage.add_unit(session, actor=admin, kind="freezer", name="-80 #7")
        for barcode in ("BOX-0301", "BOX-0302"):
            storage.add_unit(
                session, actor=admin, kind="box", name=barcode, parent=freezer.barcode,
                barcode=barcode, grid=(4, 4),
            )  # fmt: skip
        places = {legacy: ("BOX-0301", position) for position, legacy in LAYOUT.items()}
        places[ELSEWHERE] = ("BOX-0302", "A1")
        return {
            legacy: accession_tube(
                session, admin, code, specimen_type=legacy.split("-")[2], legacy_id=legacy,
                destination=box, position=position,
            ).accession_id
            for legacy, (box, position) in places.items()
        }  # fmt: skip


def _places(engine, ids: dict[str, str]) -> dict[str, tuple[str | None, str | None, str]]:
    with uow(engine, readonly=True) as session:
        reads = {legacy: find_specimen(session, accession) for legacy, accession in ids.items()}
    return {legacy: (r.box_barcode, r.position, r.status) for legacy, r in reads.items()}


def _lines(screen) -> dict[str, str]:
    return {line.position: line.status for line in screen.report.lines}


def _fits(app, rows: int, cols: int) -> None:
    """The whole grid is on an 80x24 screen, above the footer."""
    grid = app.screen.query_one(BoxGrid)
    assert (grid.view.rows, grid.view.cols) == (rows, cols)
    region = grid.content_region
    assert region.height >= rows + 2 and region.width >= 3 + CELL * cols
    assert grid.region.right <= 80
    assert grid.region.bottom <= app.screen.query_one(KeyBar).region.y


async def _keys(app, pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot)


def test_the_freezer_tree_opens_down_to_a_box_and_boxes_fit_80x24(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        code = _first_participant(app.database.engine, admin)
        with uow(app.database.engine) as session:
            for name, grid in (("-80 wide", (8, 12)), ("-80 square", (10, 10))):
                one_shelf_freezer(session, admin, name, racks=2, boxes_per_rack=2, box_grid=grid)
            units = [n.unit for n in storage.storage_tree(session, actor=admin)]
            freezers = [u.barcode for u in units if u.kind == "freezer"]
            boxes = [u for u in units if u.kind == "box"]
            rack = storage.storage_path(session, actor=admin, barcode=boxes[-1].barcode)[-2]
            accession_tube(session, admin, code, destination=boxes[1].barcode)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await _keys(app, pilot, "ctrl+f")
            assert isinstance(app.screen, FreezerScreen)
            tree = app.screen.query_one(Tree)
            assert [str(node.label) for node in tree.root.children] == [
                f"-80 wide  {freezers[0]}  383/384 free",
                f"-80 square  {freezers[1]}  400/400 free",
            ]
            # open the freezer, its shelf, its first rack; then the rack's second box
            await _keys(app, pilot, "enter", "down", "enter", "down", "enter", "down", "down")
            assert tree.cursor_node.data.unit.barcode == boxes[1].barcode
            await _keys(app, pilot, "enter")
            assert isinstance(app.screen, BoxScreen) and app.screen.barcode == boxes[1].barcode
            _fits(app, 8, 12)
            await _keys(app, pilot, "escape")
            assert isinstance(app.screen, FreezerScreen)
            assert app.screen.query_one(Tree).cursor_node.data.unit.barcode == boxes[1].barcode

            # a rack's barcode opens the tree at that rack
            await scan(app, pilot, rack.barcode)
            tree = app.screen.query_one(Tree)
            assert isinstance(app.screen, FreezerScreen) and app.screen.barcode == rack.barcode
            await until(
                app,
                pilot,
                lambda: (
                    tree.cursor_node is not None
                    and tree.cursor_node.data.unit.barcode == rack.barcode
                ),
            )
            assert tree.cursor_node.is_expanded
            await _keys(app, pilot, "down", "down", "enter")
            assert isinstance(app.screen, BoxScreen) and app.screen.barcode == boxes[-1].barcode
            _fits(app, 10, 10)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_scanned_tubes_and_boxes_open_in_the_screens_kept_from_the_last_scan(db_url, admin):
    """A scan from anywhere shows its tube or box in the screen built for the last one (already
    built, so it shows in a fraction of the time) with nothing of the last left on it; a kept
    screen further down the stack is not pulled up; another user starts with none kept."""

    async def scenario():
        app = make_app(db_url, admin)
        engine = app.database.engine
        code = _first_participant(engine, admin)
        with uow(engine) as session:
            users.set_pin(session, actor=admin, username="admin", pin="9876")
            one_shelf_freezer(session, admin, "-80 kept", boxes_per_rack=2, box_grid=(8, 12))
            one_shelf_freezer(session, admin, "-80 other", box_grid=(10, 10))
            units = [n.unit for n in storage.storage_tree(session, actor=admin)]
            wide, _, square = [u.barcode for u in units if u.kind == "box"]
            tubes = [
                accession_tube(
                    session, admin, code, specimen_type=kind, destination=box
                ).accession_id
                for kind, box in (("SER", wide), ("PL1", square))
            ]  # fmt: skip
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, tubes[0])
            kept = app.screen
            assert isinstance(kept, SpecimenScreen) and kept.accession_id == tubes[0]
            await _keys(app, pilot, "escape")
            await scan(app, pilot, tubes[1])
            assert app.screen is kept and kept.accession_id == tubes[1]
            assert tubes[1] in _shown(kept) and tubes[0] not in _shown(kept)
            assert "PL1" in _shown(kept) and "SER" not in _shown(kept)
            await _keys(app, pilot, "escape")

            await scan(app, pilot, wide)
            box_screen = app.screen
            assert isinstance(box_screen, BoxScreen)
            await _keys(app, pilot, "down", "down", "right", "escape")
            await scan(app, pilot, square)
            assert app.screen is box_screen and box_screen.barcode == square
            grid = box_screen.query_one(BoxGrid)
            assert grid.view.unit.barcode == square and grid.cursor == (1, 1)
            assert grid.current.accession_id == tubes[1]  # the square box's first position
            _fits(app, 10, 10)
            await _keys(app, pilot, "escape")

            # the kept tube screen under a participant's: the next tube opens on top
            await scan(app, pilot, tubes[0])
            await scan(app, pilot, code)
            assert isinstance(app.screen, ParticipantScreen)
            await scan(app, pilot, tubes[1])
            assert isinstance(app.screen, SpecimenScreen) and app.screen is not kept
            assert app.screen.accession_id == tubes[1]
            await _keys(app, pilot, "escape", "escape")
            assert app.screen is kept and kept.accession_id == tubes[0]

            await _keys(app, pilot, "ctrl+l")
            await sign_in(app, pilot, "admin", "9876")
            assert app.kept_views == set()
            await scan(app, pilot, tubes[0])
            kept = app.screen
            assert isinstance(kept, SpecimenScreen) and kept.accession_id == tubes[0]
            # an answer still on its way for the tube shown before is not shown over this one
            with uow(engine, readonly=True) as session:
                late = specimen_view(session, actor=app.actor, accession=tubes[1])
            kept.show(late)
            assert tubes[1] not in _shown(kept) and tubes[0] in _shown(kept)
            await _keys(app, pilot, "escape")

            # a screen that waits for scans lets a box pass: it opens in a screen of its own
            await scan(app, pilot, wide)
            kept_box = app.screen
            await _keys(app, pilot, "escape")
            app.action_pull_list()
            await settle(app, pilot)
            await scan(app, pilot, square)
            assert isinstance(app.screen, BoxScreen) and app.screen is not kept_box
            await until(app, pilot, lambda: bool(app.screen.query(BoxGrid)))
            assert app.screen.query_one(BoxGrid).view.unit.barcode == square
        engine.dispose()

    asyncio.run(scenario())


def _shown(screen) -> str:
    """Every text the screen shows: its static lines and every table cell."""
    texts = [str(widget.content) for widget in screen.query(Static)]
    for table in screen.query(DataTable):
        texts += [str(cell) for row in range(table.row_count) for cell in table.get_row_at(row)]
    return "\n".join(texts)


def test_a_participant_scan_shows_visits_and_specimens_and_never_phi(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        engine = app.database.engine
        code = _first_participant(engine, admin)
        with uow(engine) as session:
            identity = participants.show_participant(
                session, actor=admin, code=code, with_identity=True
            ).identity
            box = storage.add_unit(session, actor=admin, kind="box", name="Bench box", grid=(9, 9))
            tubes = [
                accession_tube(
                    session, admin, code, visit="baseline", specimen_type=kind,
                    destination=box.barcode if kind == "SER" else None,
                ).accession_id
                for kind in ("SER", "PL1")
            ]  # fmt: skip
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, code)
            assert isinstance(app.screen, ParticipantScreen) and app.screen.code == code
            table = app.screen.query_one(DataTable)
            rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
            assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
                (tubes[0], "SER primary", "baseline", "500 uL", "available", "Bench box A1"),
                (tubes[1], "PL1 primary", "baseline", "500 uL", "available", "not placed"),
            ]
            shown = _shown(app.screen)
            assert code in shown and "baseline" in shown
            assert identity.mrn and identity.family_name and identity.date_of_birth
            for phi in (identity.mrn, identity.family_name, str(identity.date_of_birth)):
                assert phi not in shown
            await _keys(app, pilot, "down", "enter")
            assert isinstance(app.screen, SpecimenScreen) and app.screen.accession_id == tubes[1]
        engine.dispose()

    asyncio.run(scenario())


def test_reconcile_a_box_by_scanning_its_tubes_one_by_one(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        engine = app.database.engine
        ids = _boxes_to_reconcile(engine, admin)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await _keys(app, pilot, "ctrl+r")
            screen = app.screen
            assert isinstance(screen, ReconcileScreen)
            await scan(app, pilot, ids[LAYOUT["A1"]])  # a tube before its box: not taken
            assert app.screen is screen and screen.box is None
            await scan(app, pilot, "box-0301")
            prompt = screen.query_one("#reconcile-next", Static)
            assert f"Next: A1 (recorded {ids[LAYOUT['A1']]})" in str(prompt.content)
            assert set(_lines(screen).values()) == {"unread"}

            await scan(app, pilot, ids[LAYOUT["A1"]])  # A1: where it belongs
            await scan(app, pilot, ids[LAYOUT["A1"]])  # again: refused
            assert any("already scanned at A1" in n.message for n in app._notifications)
            await scan(app, pilot, ELSEWHERE)  # A2: by its legacy ID, from BOX-0302
            await scan(app, pilot, "OLD-TUBE-77")  # A3: no such tube
            await scan(app, pilot, ids[LAYOUT["B2"]])  # A4: a slip...
            assert _lines(screen)["A4"] == "moved"
            await _keys(app, pilot, "backspace")  # ...undone
            assert "Next: A4 (recorded empty)" in str(prompt.content)
            await _keys(app, pilot, "e", "e", "s")  # A4 and B1 empty, B2 unreadable
            assert "Next: B3 (recorded empty)" in str(prompt.content)
            await _keys(app, pilot, "E")  # and the rest of the box empty
            assert "Every position is scanned" in str(prompt.content)
            await scan(app, pilot, ids[LAYOUT["C1"]])
            assert any("Every position is scanned" in n.message for n in app._notifications)
            lines = _lines(screen)
            assert [lines[p] for p in ("A1", "A2", "A3", "A4", "B1", "B2", "C1", "D4")] == [
                "match", "moved", "unexpected", "empty", "missing", "unread", "missing", "empty",
            ]  # fmt: skip
            assert screen.report.counts == {
                "match": 1, "moved": 1, "unexpected": 1, "missing": 4, "unread": 1, "empty": 10,
            }  # fmt: skip
            assert screen.report.lines[2].found == "OLD-TUBE-77"
            assert _places(engine, ids)[ELSEWHERE] == ("BOX-0302", "A1", "available")

            await _keys(app, pilot, "ctrl+s")
            assert isinstance(app.screen, Confirm)
            await _keys(app, pilot, "y")
            assert app.screen is screen and screen.report.committed
        places = _places(engine, ids)
        assert places[ELSEWHERE] == ("BOX-0301", "A2", "available")
        # A2's tube: its position held another one; A3's: an unknown tube stood in its place
        for position in ("A2", "A3", "B1", "C1"):
            assert places[LAYOUT[position]] == (None, None, "missing")
        for position in ("A1", "B2"):  # matched, or not read: left alone
            assert places[LAYOUT[position]] == ("BOX-0301", position, "available")
        engine.dispose()

    asyncio.run(scenario())


def test_reconcile_a_box_from_a_scanner_file(db_url, admin):
    shutil.copy(DATA / "rack_scan_BOX-0301.csv", Path.home() / "rack.csv")

    async def scenario():
        app = make_app(db_url, admin)
        engine = app.database.engine
        ids = _boxes_to_reconcile(engine, admin)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await _keys(app, pilot, "ctrl+r")
            screen = app.screen
            await scan(app, pilot, "BOX-0301")
            await _keys(app, pilot, "l")
            await type_text(app, pilot, "~/nothing.csv")
            assert any("cannot read" in n.message for n in app._notifications)
            assert screen.file is None
            await _keys(app, pilot, "l", "escape")  # Escape closes the path, not the screen
            assert app.screen is screen and not screen.query_one("#scan-file").display
            await _keys(app, pilot, "l")
            await type_text(app, pilot, "~/rack.csv")
            assert screen.file is not None and screen.file[0] == "rack.csv"
            assert screen.report.counts == {
                "match": 2, "moved": 4, "unexpected": 0, "missing": 1, "unread": 0, "empty": 9,
            }  # fmt: skip
            await scan(app, pilot, ids[LAYOUT["A1"]])  # the file is what is compared
            assert any("Comparing with rack.csv" in n.message for n in app._notifications)
            await _keys(app, pilot, "ctrl+s", "y")
            assert screen.report.committed
        places = _places(engine, ids)
        assert {legacy: place[:2] for legacy, place in places.items()} == {
            LAYOUT["A1"]: ("BOX-0301", "A1"),
            LAYOUT["A3"]: ("BOX-0301", "A2"),
            LAYOUT["A2"]: ("BOX-0301", "A3"),
            ELSEWHERE: ("BOX-0301", "B1"),
            LAYOUT["B2"]: ("BOX-0301", "B2"),
            LAYOUT["B1"]: ("BOX-0301", "D4"),
            LAYOUT["C1"]: (None, None),
        }
        assert places[LAYOUT["C1"]][2] == "missing"
        engine.dispose()

    asyncio.run(scenario())


def test_the_print_queue_shows_what_went_to_which_printer(db_url, admin, tmp_path):
    async def scenario():
        printer = PrinterProfile(kind="pdf-folder", folder=tmp_path)
        app = make_app(db_url, admin, printers={"bench": printer}, default_printer="bench")
        engine = app.database.engine
        code = _first_participant(engine, admin)
        with uow(engine) as session:
            box = storage.add_unit(session, actor=admin, kind="box", name="Bench box", grid=(9, 9))
            tube = accession_tube(session, admin, code, destination=box.barcode).accession_id
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, tube)
            await _keys(app, pilot, "p", "escape")  # (a box scanned here would move the tube)
            await scan(app, pilot, box.barcode)
            await _keys(app, pilot, "p", "ctrl+j")
            assert isinstance(app.screen, PrintQueueScreen)
            table = app.screen.query_one(DataTable)
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            assert [(what, Path(target).parent) for _, what, target in rows] == [
                (box.barcode, tmp_path),  # newest first
                (tube, tmp_path),
            ]
            assert all(Path(target).is_file() for _, _, target in rows)
        engine.dispose()

    asyncio.run(scenario())
