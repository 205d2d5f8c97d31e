"""Picking a specimen request at the workstation, driven as a technician works (Pilot, scans in
bursts): Ctrl+K, the request's code typed, the tubes scanned in freezer order and ticked; a
wrong tube refused loudly (bell, red title, an error naming it) and nothing written."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta

import sqlalchemy as sa
from textual.widgets import Static
from tui_helpers import scan, settle, sign_in, type_text

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.services import request_review, requests
from biobank.services.demo import seed_demo
from biobank.services.requests import LineWant, RequestDraft
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.pick_list import PickListScreen


def _app(db_url, admin, **settings_given) -> BiobankApp:
    """The demo with its freezer of serum (users tech, PIN 1111, and admin)."""
    database = open_database(Settings(database_url=db_url))
    with uow(database.engine) as session:
        seed_demo(session, actor=admin, participants=6, seed=1, with_specimens=True)
    settings = Settings(database_url=db_url, workstation="bench-1", **settings_given)
    return BiobankApp(settings=settings, database=database)


def _approved(engine, admin, **line) -> str:
    """A request for one tube per participant of the demo's commonest placed type."""
    with engine.connect() as connection:
        kinds = Counter(
            connection.execute(
                sa.text("SELECT specimen_type FROM specimen WHERE status = 'available' "
                        "AND box_id IS NOT NULL")
            ).scalars()
        )  # fmt: skip
    kind = kinds.most_common(1)[0][0]
    draft = RequestDraft(
        title="Demo tubes", uses=["FUTURE_RESEARCH"], project="P", irb_reference="IRB-1",
        irb_expires_on=date.today() + timedelta(days=90), destination_institution="Lab",
        destination_address="1 Way", destination_contact="Dr A",
        cohort=CohortQuery(specimen_types=[kind]), lines=[LineWant(specimen_type=kind, **line)],
    )  # fmt: skip
    with uow(engine) as session:
        code = requests.create_request(session, actor=admin, draft=draft).code
        requests.submit_request(session, actor=admin, code=code)
    with uow(engine) as session:
        request_review.approve_request(session, actor=admin, code=code, reason="ok", floor=0)
    return code


def _count(engine, sql: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql)).scalar_one()


async def _picking(app, pilot, code: str) -> PickListScreen:
    """Signed in, Ctrl+K, the request's code typed: the pick list on screen."""
    await sign_in(app, pilot)
    await pilot.press("ctrl+k")
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, PickListScreen)
    await type_text(app, pilot, code)
    return screen


def test_a_technician_picks_a_request_by_scanning(db_url, admin):
    async def scenario():
        app = _app(db_url, admin)
        engine = app.database.engine
        code = _approved(engine, admin)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await _picking(app, pilot, code.lower())
            table = screen.query_one("#pick-lines")
            order = list(table.keys)
            assert len(order) >= 2 and f"Pick {code}: {len(order)} to pick" in str(
                screen.query_one("#pick-title", Static).content
            )
            assert order[0] in str(screen.query_one("#pick-prompt", Static).content)
            await scan(app, pilot, order[0])
            assert str(table.rows[order[0]][-1]) == "✓ picked"
            assert table.marked == order[1]  # the next tube to pick
            events = _count(engine, "SELECT count(*) FROM specimen_event")
            wrong = _count(
                engine,
                "SELECT min(accession_id) FROM specimen WHERE id NOT IN "
                "(SELECT specimen_id FROM specimen_reservation)",
            )
            await scan(app, pilot, wrong)
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert any("WRONG TUBE" in e and wrong in e for e in errors), errors
            assert screen.query_one("#pick-title").has_class("refused")
            assert app.screen is screen
            assert _count(engine, "SELECT count(*) FROM specimen_event") == events
            for tube in order[1:]:
                await scan(app, pilot, tube)
            assert "0 to pick" in str(screen.query_one("#pick-title", Static).content)
            assert str(screen.query_one("#pick-prompt", Static).content) == "Everything is picked."
        picked = _count(
            engine, "SELECT count(*) FROM specimen_reservation WHERE picked_at IS NOT NULL"
        )
        assert picked == len(order)

    asyncio.run(scenario())


def test_a_tube_of_aliquots_is_split_when_picked_and_their_labels_printed(db_url, admin, tmp_path):
    printed = tmp_path / "printed"
    printed.mkdir()
    printers = {"bench": {"kind": "pdf-folder", "folder": str(printed)}}
    app = _app(db_url, admin, printers=printers, default_printer="bench")
    engine = app.database.engine
    code = _approved(engine, admin, aliquots=2, aliquot_volume=10)

    async def scenario() -> tuple[str, list[str]]:
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await _picking(app, pilot, code)
            table = screen.query_one("#pick-lines")
            first = table.keys[0]
            assert "2 × 10 aliquots" in str(table.rows[first][5])
            await scan(app, pilot, first)
            await settle(app, pilot)
            assert first not in table.rows  # its aliquots took its line
            made = [key for key in table.keys if str(table.rows[key][-1]) == "✓ picked"]
            notes = " ".join(n.message for n in app._notifications)
            assert "split into" in notes and all(a in notes for a in made), notes
            return first, made

    first, made = asyncio.run(scenario())
    assert len(made) == 2
    assert len(list(printed.iterdir())) == 1  # one job, both labels
    for accession in made:
        assert (
            _count(
                engine,
                "SELECT count(*) FROM specimen c JOIN specimen p ON p.id = c.parent_id "
                f"WHERE c.accession_id = '{accession}' AND p.accession_id = '{first}'",
            )
            == 1
        )


def test_a_tube_not_found_is_marked_missing_and_replaced(db_url, admin):
    app = _app(db_url, admin)
    engine = app.database.engine
    code = _approved(engine, admin)

    async def scenario() -> tuple[str, list[str]]:
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await _picking(app, pilot, code)
            table = screen.query_one("#pick-lines")
            gone = table.marked
            assert gone == table.keys[0]
            await pilot.press("m")
            await settle(app, pilot)
            assert gone not in table.rows
            await pilot.press("s")
            await settle(app, pilot)
            notes = " ".join(n.message for n in app._notifications)
            assert f"{gone} replaced by" in notes, notes
            return gone, list(table.keys)

    gone, listed = asyncio.run(scenario())
    assert (
        _count(
            engine,
            f"SELECT count(*) FROM specimen WHERE accession_id = '{gone}' AND status = 'missing'",
        )
        == 1
    )
    new = _count(
        engine,
        "SELECT min(s.accession_id) FROM specimen s JOIN specimen_reservation r "
        "ON r.specimen_id = s.id WHERE r.ended_at IS NULL AND s.participant_id = "
        f"(SELECT participant_id FROM specimen WHERE accession_id = '{gone}')",
    )
    assert new in listed
