"""What a technician reads at the bench, driven as they would: statuses that read without
colour, a reconciliation that is not thrown away by one key, a name typed fast at sign-in, the
saved tubes' places clear of notices at 80x24, and a long pull list worked through by scanning."""

import asyncio
from datetime import date

import sqlalchemy as sa
from inventory import NOW, accession_tube, one_shelf_freezer
from test_tui_screens import LAYOUT, _boxes_to_reconcile
from textual import events
from textual.app import App
from textual.keys import _character_to_key
from textual.widgets import Input, Static
from textual.widgets._toast import Toast
from tui_helpers import HUMAN_GAP, make_app, scan, settle, sign_in, type_text

from biobank.db import uow
from biobank.services import custody, participants, pulls, storage, users, withdrawals
from tui.screens.accession import AccessionScreen
from tui.screens.box import BoxScreen
from tui.screens.home import HomeScreen
from tui.screens.pull_list import PullListScreen
from tui.screens.reconcile import ConfirmLeave, ReconcileScreen
from tui.screens.sign_in import SignInScreen
from tui.widgets.box_grid import BoxGrid
from tui.widgets.checkbox import Checkbox
from tui.widgets.key_bar import KeyBar
from tui.widgets.line_table import LineTable


def _first_participant(session) -> str:
    return session.execute(sa.text("SELECT code FROM participant ORDER BY code")).scalar()


def _serum(session, admin, code: str, box: str, position: str | None = None) -> str:
    return accession_tube(
        session, admin, code, visit="baseline", collected_at=NOW, destination=box,
        position=position,
    ).accession_id  # fmt: skip


async def _burst(app, pilot, text: str, end: str) -> None:
    """Keys as fast as a scanner sends them (or a fast typist), ended by `end`."""
    for character in text:
        key = character if character.isalnum() else _character_to_key(character)
        app._driver.send_message(events.Key(key, character))
    app._driver.send_message(events.Key(end, "\t" if end == "tab" else "\r"))
    await settle(app, pilot)


def _keys_shown(app) -> str:
    return str(app.screen.query_one(KeyBar).render())


# --- 11: statuses and checkboxes that read without colour ------------------------------------


def test_a_checked_out_tube_reads_apart_from_a_stored_one_without_colour(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        with uow(app.database.engine) as session:
            box = storage.add_unit(session, actor=admin, kind="box", name="Bench", grid=(9, 9))
            code = _first_participant(session)
            _serum(session, admin, code, box.barcode, "A1")
            out = _serum(session, admin, code, box.barcode, "A2")
            custody.check_out(session, actor=admin, accession=out)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, box.barcode)
            assert isinstance(app.screen, BoxScreen)
            first_row = app.screen.query_one(BoxGrid).render().plain.splitlines()[1].split()
            assert first_row[:3] == ["A", "SER", "↑SER"]  # same type: only the mark differs
            legend = str(app.screen.query_one("#box-legend", Static).render())
            assert "↑ checked out" in legend and "no mark: stored" in legend
            assert app.screen.query_one("#box-legend").region.bottom <= 23  # above the keys
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_checkbox_marks_on_and_off_by_more_than_colour():
    class Form(App):
        def compose(self):
            yield Checkbox("Print labels on save", True, id="on")
            yield Checkbox("also one row per participant", id="off")

    async def scenario():
        async with Form().run_test() as pilot:
            on, off = pilot.app.query_one("#on", Checkbox), pilot.app.query_one("#off", Checkbox)
            assert "✓" in on.render().plain and "✓" not in off.render().plain
            off.focus()
            await pilot.press("space")
            assert off.value and "✓" in off.render().plain

    asyncio.run(scenario())


# --- 12: Escape asks before scanned positions are lost ---------------------------------------


def test_escape_asks_before_discarding_scanned_positions(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        ids = _boxes_to_reconcile(app.database.engine, admin)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            for key in ("ctrl+r", "escape"):  # nothing scanned: Escape leaves at once
                await pilot.press(key)
                await settle(app, pilot)
            assert isinstance(app.screen, HomeScreen)

            await pilot.press("ctrl+r")
            await settle(app, pilot)
            await scan(app, pilot, "BOX-0301")
            await pilot.press("escape")  # the box only: nothing scanned to lose
            await settle(app, pilot)
            assert isinstance(app.screen, HomeScreen)

            await pilot.press("ctrl+r")
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, ReconcileScreen)
            await scan(app, pilot, "BOX-0301")
            await scan(app, pilot, ids[LAYOUT["A1"]])
            for stay in ("n", "escape"):
                await pilot.press("escape")
                await settle(app, pilot)
                assert isinstance(app.screen, ConfirmLeave)
                question = str(app.screen.query_one(Static).render())
                assert "1 scanned position will be discarded" in question
                await pilot.press(stay)
                await settle(app, pilot)
                assert app.screen is screen and screen.rows == [("A1", ids[LAYOUT["A1"]], "")]
            await pilot.press("escape")
            await settle(app, pilot)
            await pilot.press("enter")
            await settle(app, pilot)
            assert isinstance(app.screen, HomeScreen)
        app.database.engine.dispose()

    asyncio.run(scenario())


# --- 16: sign-in: a name typed fast stays a name; the keys shown are the keys that work -------


def test_a_name_typed_fast_stays_in_its_field_and_a_badge_still_signs_in(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        with uow(app.database.engine) as session:
            users.add_user(
                session, actor=admin, username="badgeuser", role="technician", badge="BADGE-0042"
            )
        async with app.run_test(size=(80, 24)) as pilot:
            shown = _keys_shown(app)
            assert "Quit" in shown and "Help" in shown
            for signed_in_only in ("Lock", "Freezers", "Accession", "Reconcile", "Export"):
                assert signed_in_only not in shown
            await pilot.press("ctrl+n")  # not offered, and does nothing
            await settle(app, pilot)
            assert isinstance(app.screen, SignInScreen)

            await _burst(app, pilot, "tech", "tab")
            assert app.screen.query_one("#username", Input).value == "tech"
            assert app.focused is app.screen.query_one("#pin", Input)  # the Tab moved on
            assert app.actor is None and not any("badge" in n.message for n in app._notifications)
            await type_text(app, pilot, "1111")
            assert app.actor is not None and app.actor.username == "tech"
            assert isinstance(app.screen, HomeScreen) and "Lock" in _keys_shown(app)

            await pilot.press("ctrl+l")
            await settle(app, pilot)
            assert "Lock" not in _keys_shown(app)
            await _burst(app, pilot, "BADGE-0042", "tab")  # a badge scan, Tab-ended
            assert app.actor is not None and app.actor.username == "badgeuser"
        app.database.engine.dispose()

    asyncio.run(scenario())


# --- 18: the saved tubes' places are not under a notice at 80x24 -----------------------------


def test_notices_leave_the_saved_tubes_locations_readable_at_80x24(db_url, admin, tmp_path):
    printed = tmp_path / "printed"
    printed.mkdir()
    printers = {"bench": {"kind": "pdf-folder", "folder": str(printed)}}

    async def scenario():
        app = make_app(db_url, admin, printers=printers, default_printer="bench")
        with uow(app.database.engine) as session:
            one_shelf_freezer(session, admin, "-80 #1", box_grid=(9, 9))
            code = _first_participant(session)
            participants.add_visit(  # collected today, at today's visit
                session, actor=admin, participant=code, label="flare", visit_date=date.today()
            )
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await sign_in(app, pilot)
            await pilot.press("ctrl+n")
            await settle(app, pilot)
            assert isinstance(app.screen, AccessionScreen)
            assert "✓" in app.screen.query_one("#print_labels", Checkbox).render().plain
            await scan(app, pilot, code)
            for key in (*"2000", "enter", "enter", *"250", "ctrl+s"):
                await pilot.press(key)
                await pilot.pause(HUMAN_GAP)
            await settle(app, pilot)
            await settle(app, pilot)  # the label job the save started
            saved = app.screen.query_one("#saved", Static)
            text = str(saved.render())
            assert text.count("-80 #1") == 5  # the primary and its 4 aliquots, each placed
            toasts = list(app.screen.query(Toast))
            assert len(toasts) >= 2  # accessioned, and printed
            for toast in toasts:
                assert not saved.region.overlaps(toast.region), (saved.region, toast.region)
            assert saved.region.bottom <= app.screen.query_one(KeyBar).region.y  # all shown
        app.database.engine.dispose()

    asyncio.run(scenario())


# --- 19: a scan ticks its own line of the pull list ------------------------------------------


def test_a_scan_ticks_its_own_line_and_leaves_the_others(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        with uow(app.database.engine) as session:
            box = storage.add_unit(session, actor=admin, kind="box", name="Bench", grid=(9, 9))
            code = _first_participant(session)
            for _ in range(5):
                _serum(session, admin, code, box.barcode)
            withdrawals.withdraw(
                session, actor=admin, participant=code, withdrawn_on=date.today(),
                requested_by="the participant", disposition="destroy",
            )  # fmt: skip
            listed = [item.accession_id for item in pulls.pull_list(session, actor=admin)]
        assert len(listed) == 5
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await pilot.press("ctrl+o")
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, PullListScreen)
            table = screen.query_one(LineTable)

            def rows() -> list[list[str]]:
                return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]

            before = rows()
            assert [row[0] for row in before] == listed
            assert {row[5] for row in before} == {"to pull"}

            await scan(app, pilot, listed[2])  # out of order: the middle line
            after = rows()
            assert after[2] == [*before[2][:5], "✓ destroyed"]
            assert after[:2] + after[3:] == before[:2] + before[3:]
            assert "4 to pull, 1 pulled" in str(screen.query_one("#pull-title", Static).render())
            assert listed[0] in str(screen.query_one("#pull-prompt", Static).render())
            assert table.marked == listed[0]

            await scan(app, pilot, listed[0])  # the next one: the prompt moves on
            assert rows()[0][5] == "✓ destroyed"
            assert listed[1] in str(screen.query_one("#pull-prompt", Static).render())
            assert table.marked == listed[1]
        app.database.engine.dispose()

    asyncio.run(scenario())
