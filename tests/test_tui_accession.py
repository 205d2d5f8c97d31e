"""The accession form driven as at the bench: every key counted, scans as bursts."""

import asyncio
import json
import os
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
from inventory import one_shelf_freezer
from textual.widgets import Input, OptionList, Select, Static
from tui_helpers import HUMAN_GAP, make_app, scan, settle, sign_in, type_text

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.services import kits, participants, specimens, storage
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.accession import AccessionScreen, NewVisitPrompt


class Scan(str):
    """A scanner's burst: one key action however long the code."""


async def act(app, pilot, actions: list[str]) -> None:
    for action in actions:
        if isinstance(action, Scan):
            await scan(app, pilot, action)
            await settle(app, pilot)  # what the scan started (the participant's visits)
        else:
            await pilot.press(action)
            await pilot.pause(HUMAN_GAP)
    await settle(app, pilot)
    await settle(app, pilot)  # the label job the save started


def _stock(app, admin, *, visits_today: bool = True) -> dict:
    """A freezer with two empty boxes, a spare box outside it, and a demo participant whose
    visits are years old, or (`visits_today`) who was also seen 20 days ago and today."""
    today = date.today()
    with uow(app.database.engine) as session:
        freezer = one_shelf_freezer(session, admin, "-80 #1", boxes_per_rack=2, box_grid=(9, 9))
        spare = storage.add_unit(session, actor=admin, kind="box", name="Bench", grid=(9, 9))
        code = participants.list_participants(session, actor=admin)[0].code
        if visits_today:
            for label, day in (("month 18", today - timedelta(days=20)), ("month 24", today)):
                participants.add_visit(
                    session, actor=admin, participant=code, label=label, visit_date=day
                )
        shown = participants.show_participant(session, actor=admin, code=code)
    return {
        "freezer": freezer.barcode,
        "spare": spare.barcode,
        "participant": code,
        "latest_visit": shown.visits[-1].label,
    }


def _made(app, admin) -> list:
    """Every specimen in the database, the primary first, as read models."""
    with uow(app.database.engine) as session:
        ids = session.execute(
            sa.text("SELECT accession_id FROM specimen ORDER BY parent_id IS NOT NULL, id")
        ).scalars()
        return [specimens.show_specimen(session, actor=admin, accession=i).specimen for i in ids]


async def retype(app, pilot, text: str) -> None:
    field = app.screen.query_one("#participant", Input)
    field.value = ""
    field.focus()
    await type_text(app, pilot, text)
    await settle(app, pilot)


def _error(app, field: str) -> str:
    return str(app.screen.query_one(f"#{field}-error", Static).content)


def test_a_visit_with_four_aliquots_takes_twelve_keys(db_url, admin, tmp_path):
    printed = tmp_path / "printed"
    printed.mkdir()
    printers = {"bench": {"kind": "pdf-folder", "folder": str(printed)}}

    async def scenario():
        app = make_app(db_url, admin, printers=printers, default_printer="bench")
        stock = _stock(app, admin)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            keys = [
                "ctrl+n",
                Scan(stock["participant"]),
                *"2000", "enter",  # quantity, on to the aliquot count (4 by default)
                "enter", *"250",  # the volume of each aliquot
                "ctrl+s",
            ]  # fmt: skip
            assert len(keys) <= 12
            await act(app, pilot, keys)
            assert isinstance(app.screen, AccessionScreen)
            made = _made(app, admin)
            primary, aliquots = made[0], made[1:]
            assert primary.participant_code == stock["participant"]
            assert primary.visit_label == stock["latest_visit"]
            assert (primary.kind, primary.specimen_type, primary.container_type) == (
                "primary", "SER", "SST",
            )  # fmt: skip
            assert (primary.initial_quantity, primary.quantity, primary.unit) == (2000, 1000, "uL")
            assert [(a.kind, a.quantity, a.parent_accession_id) for a in aliquots] == [
                ("aliquot", 250, primary.accession_id)
            ] * 4
            assert len({a.box_barcode for a in aliquots}) == 1 and aliquots[0].box_barcode
            assert all(s.location and "-80 #1" in s.location for s in made)
            shown = str(app.screen.query_one("#saved", Static).content)
            assert all(f"{s.accession_id}" in shown and s.location in shown for s in made)
            assert len(list(printed.glob("*.pdf"))) == 1
            assert any("Printed" in n.message for n in app._notifications)

            await pilot.press("n")  # the next tube of the same visit
            await settle(app, pilot)
            assert app.screen.query_one("#participant", Input).value == stock["participant"]
            assert app.screen.query_one("#visit", Select).value == stock["latest_visit"]
            assert app.screen.query_one("#quantity", Input).value == ""
            assert app.screen.query_one("#volume", Input).value == "250"
            assert str(app.screen.query_one("#saved", Static).content) == ""
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_kit_tube_keeps_its_reserved_id_and_a_scanned_box_takes_the_set(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)  # no printer here: the error shows, the save stands
        stock = _stock(app, admin)
        with uow(app.database.engine) as session:
            kit = kits.reserve_kit(
                session, actor=admin, participant=stock["participant"], visit="month 18",
                count=2, specimen_type="PL1",
            )  # fmt: skip
        tube = kit.accession_ids[0]
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await act(app, pilot, ["ctrl+n", Scan(tube), Scan(stock["spare"])])
            screen = app.screen
            assert screen.query_one("#participant", Input).value == stock["participant"]
            assert screen.query_one("#visit", Select).value == "month 18"
            assert screen.query_one("#specimen_type", Select).value == "PL1"
            assert screen.query_one("#container_type", Select).value == "PED"
            assert screen.query_one("#destination", Input).value == stock["spare"]
            await act(app, pilot, [*"1500", "enter", "enter", *"300", "ctrl+s"])
            primary, *aliquots = _made(app, admin)
            assert primary.accession_id == tube and primary.specimen_type == "PL1"
            assert primary.visit_label == "month 18"
            assert {a.box_barcode for a in [primary, *aliquots]} == {stock["spare"]}
            assert len(aliquots) == 4
            assert any("no default printer" in n.message for n in app._notifications)
        with uow(app.database.engine) as session:
            assert kits.find_reserved(session, tube).accessioned
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_bad_volume_and_an_overdraw_are_shown_at_their_fields(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        stock = _stock(app, admin)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await act(app, pilot, ["ctrl+n", Scan(stock["participant"]), "ctrl+s"])
            assert "quantity must be a number" in _error(app, "quantity")  # checked here
            await act(app, pilot, ["0", "enter", "enter", *"250", "ctrl+s"])
            assert "more than zero" in _error(app, "quantity")  # the service's word
            assert _made(app, admin) == []

            await act(app, pilot, ["shift+tab", "shift+tab", *"500", "ctrl+s"])
            assert _error(app, "quantity") == ""
            assert "500 uL left, 1000 uL asked" in _error(app, "volume")
            assert any("1000 uL asked" in n.message for n in app._notifications)
            assert _made(app, admin) == []
            assert isinstance(app.screen, AccessionScreen) and not app.screen.saved
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_typing_part_of_a_code_finds_the_participant(db_url, admin):
    async def scenario():
        app = make_app(db_url, admin)
        with uow(app.database.engine) as session:
            codes = [p.code for p in participants.list_participants(session, actor=admin)]
        token = codes[2].split("-")[1]
        part = next(
            token[i : i + 3]
            for i in range(len(token) - 2)
            if sum(token[i : i + 3] in c for c in codes) == 1
        )
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await pilot.press("ctrl+n")
            await settle(app, pilot)
            await type_text(app, pilot, part.lower())
            await settle(app, pilot)
            assert app.screen.participant == codes[2]
            assert app.screen.query_one("#participant", Input).value == codes[2]
            assert not app.screen.query_one("#visit", Select).is_blank()

            await retype(app, pilot, "sle")  # in every demo code: choose one
            matches = app.screen.query_one("#matches", OptionList)
            assert matches.display and matches.option_count == len(codes)
            await pilot.press("down", "down")
            chosen = codes[matches.highlighted]
            await pilot.press("enter")
            await settle(app, pilot)
            assert app.screen.participant == chosen and not matches.display

            await retype(app, pilot, "qqq")
            assert "no participant code contains QQQ" in _error(app, "participant")
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_collection_far_from_the_visit_asks_for_a_new_visit(db_url, admin):
    """The demo participant's latest visit is years old; a tube collected now is not saved
    to it: n and Escape go back to the form, Enter (or y) makes a visit on the day."""
    today = date.today()

    async def scenario():
        app = make_app(db_url, admin)
        stock = _stock(app, admin, visits_today=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            form = ["ctrl+n", Scan(stock["participant"]), *"2000", "enter", "enter", *"250"]
            await act(app, pilot, [*form, "ctrl+s"])
            question = app.screen
            assert isinstance(question, NewVisitPrompt)
            text = " ".join(str(s.content) for s in question.query(Static))
            assert f"from visit '{stock['latest_visit']}'" in text
            assert f"collected {today}" in text and "visit_gap_days (30)" in text
            await act(app, pilot, ["n"])
            assert isinstance(app.screen, AccessionScreen) and not app.screen.saved
            assert _made(app, admin) == []

            await act(app, pilot, ["ctrl+s"])
            assert isinstance(app.screen, NewVisitPrompt)
            await act(app, pilot, ["escape"])
            assert isinstance(app.screen, AccessionScreen) and not app.screen.saved
            assert _made(app, admin) == []

            await act(app, pilot, ["ctrl+s"])
            await act(app, pilot, ["enter"])
            assert isinstance(app.screen, AccessionScreen) and app.screen.saved
            new_visit = f"unscheduled {today:%Y %m %d}"
            primary, *aliquots = _made(app, admin)
            assert primary.visit_label == new_visit and len(aliquots) == 4
            assert app.screen.query_one("#visit", Select).value == new_visit

            # the next tube of the same collection goes to the new visit without a question
            await act(app, pilot, ["n", *"1000", "ctrl+s"])
            assert app.screen.saved and len(_made(app, admin)) == 10

            # a collection typed years back asks again; y makes that day's visit
            await act(app, pilot, ["n", *"1000", "shift+tab", "shift+tab", *"2021-03-04 09:00"])
            await act(app, pilot, ["ctrl+s"])
            assert "collected 2021-03-04" in " ".join(
                str(s.content) for s in app.screen.query(Static)
            )
            await act(app, pilot, ["y"])
            assert app.screen.saved
        with uow(app.database.engine) as session:
            shown = participants.show_participant(session, actor=admin, code=stock["participant"])
        made = {v.label: v.visit_date for v in shown.visits}
        assert made[new_visit] == today
        assert made["unscheduled 2021 03 04"] == date(2021, 3, 4)
        app.database.engine.dispose()

    asyncio.run(scenario())


def _reopened(app, workstation: str = "bench-1") -> BiobankApp:
    """The workstation started again on the same database (and settings file)."""
    return BiobankApp(
        settings=Settings(database_url=app.settings.database_url, workstation=workstation),
        database=open_database(Settings(database_url=app.settings.database_url)),
    )


async def _open_form(app, pilot) -> dict:
    await sign_in(app, pilot)
    await act(app, pilot, ["ctrl+n"])
    screen = app.screen
    return {
        "type": screen.query_one("#specimen_type", Select).value,
        "count": screen.query_one("#count", Input).value,
        "volume": screen.query_one("#volume", Input).value,
        "destination": screen.query_one("#destination", Input).value,
    }


def test_the_forms_values_survive_a_restart_of_the_workstation(db_url, admin):
    """Saved with a kit's PL1, 3 × 300 uL into a scanned box; after a restart the form starts
    from them. Another workstation, and a damaged file, start from the defaults."""

    async def scenario():
        app = make_app(db_url, admin)
        stock = _stock(app, admin)
        with uow(app.database.engine) as session:
            kit = kits.reserve_kit(
                session, actor=admin, participant=stock["participant"], visit="month 24",
                count=1, specimen_type="PL1",
            )  # fmt: skip
        async with app.run_test(size=(80, 24)) as pilot:
            before = await _open_form(app, pilot)
            keys = [Scan(kit.accession_ids[0]), Scan(stock["spare"]), *"1500", "enter"]
            await act(app, pilot, [*keys, "3", "enter", *"300", "ctrl+s"])
            assert app.screen.saved
        app.database.engine.dispose()
        assert before == {
            "type": "SER",
            "count": "4",
            "volume": "",
            "destination": stock["freezer"],
        }
        remembered = {"type": "PL1", "count": "3", "volume": "300", "destination": stock["spare"]}

        again = _reopened(app)
        async with again.run_test(size=(80, 24)) as pilot:
            assert await _open_form(again, pilot) == remembered
        again.database.engine.dispose()

        elsewhere = _reopened(app, "bench-2")
        async with elsewhere.run_test(size=(80, 24)) as pilot:
            assert await _open_form(elsewhere, pilot) == before
        elsewhere.database.engine.dispose()

        state = Path(os.environ["BIOBANK_CONFIG"]).parent / "accession-defaults.json"
        assert json.loads(state.read_text())["bench-1"]["volume"] == "300"
        state.write_text('{"bench-1": {"specimen_type": "NOPE", "count": 7, "volume": "3')
        damaged = _reopened(app)
        async with damaged.run_test(size=(80, 24)) as pilot:
            assert await _open_form(damaged, pilot) == before
        damaged.database.engine.dispose()

    asyncio.run(scenario())
