"""Moving a tube at the workstation: a box scanned proposes, Enter moves, `u` takes it back."""

import asyncio

import sqlalchemy as sa
from inventory import NOW, accession_tube
from textual.widgets import Static
from tui_helpers import make_app, scan, settle, sign_in

from biobank.db import uow
from biobank.services import custody, specimens, storage
from biobank.services.audit import audit_log
from tui.screens.box import BoxScreen
from tui.screens.specimen import UNDO_REASON, SpecimenScreen


def _stock(engine, admin) -> dict:
    """Two tubes in a bench box (B2, B3) and an empty spare box."""
    with uow(engine) as session:
        box = storage.add_unit(session, actor=admin, kind="box", name="Bench box", grid=(9, 9))
        spare = storage.add_unit(session, actor=admin, kind="box", name="Spare", grid=(10, 10))
        code = session.execute(sa.text("SELECT code FROM participant ORDER BY code")).scalar()
        tube, other = (
            accession_tube(
                session, admin, code, visit="baseline", collected_at=NOW,
                destination=box.barcode, position=position,
            ).accession_id
            for position in ("B2", "B3")
        )  # fmt: skip
    return {"box": box.barcode, "spare": spare.barcode, "tube": tube, "other": other}


def _where(app, admin, accession: str) -> tuple[str, str]:
    with uow(app.database.engine) as session:
        s = specimens.show_specimen(session, actor=admin, accession=accession).specimen
    return s.box_barcode, s.position


def _events(app, admin, accession: str) -> list[tuple[str, str | None]]:
    with uow(app.database.engine) as session:
        detail = specimens.show_specimen(session, actor=admin, accession=accession)
    return [(e.event_type, e.reason) for e in detail.events]


def _proposal(app) -> str:
    return str(app.screen.query_one("#move", Static).content)


def _notices(app) -> list[str]:
    return [n.message for n in app._notifications]


def _run(db_url, admin, scenario) -> None:
    app = make_app(db_url, admin)
    stock = _stock(app.database.engine, admin)

    async def run() -> None:
        async with app.run_test() as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, stock["tube"])
            assert isinstance(app.screen, SpecimenScreen)
            await scenario(app, pilot, stock)
        app.database.engine.dispose()

    asyncio.run(run())


def test_a_box_scanned_proposes_and_enter_moves(db_url, admin, engine):
    async def scenario(app, pilot, stock) -> None:
        await scan(app, pilot, stock["spare"])
        assert _where(app, admin, stock["tube"]) == (stock["box"], "B2")  # nothing moved yet
        assert _proposal(app) == (
            f"Move {stock['tube']} from {stock['box']} B2 to {stock['spare']} (first free: A1)?"
            " Enter moves · Escape cancels"
        )
        await pilot.press("enter")
        await settle(app, pilot)
        assert _where(app, admin, stock["tube"]) == (stock["spare"], "A1")
        assert _events(app, admin, stock["tube"])[-1][0] == "moved"
        with uow(app.database.engine) as session:
            (entry, *_) = audit_log(session, actor=admin, entity="specimen")
        assert "move" in entry.action and entry.actor == "tech"
        assert "Spare A1" in str(app.screen.query_one("#detail", Static).content)
        assert _proposal(app) == "Scan a box to move the tube there."

    _run(db_url, admin, scenario)


def test_escape_cancels_the_proposal_and_shows_the_box(db_url, admin, engine):
    async def scenario(app, pilot, stock) -> None:
        await scan(app, pilot, stock["spare"])
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, BoxScreen) and app.screen.barcode == stock["spare"]
        assert _where(app, admin, stock["tube"]) == (stock["box"], "B2")
        assert [kind for kind, _ in _events(app, admin, stock["tube"])] == ["accessioned"]

    _run(db_url, admin, scenario)


def test_another_scan_cancels_the_proposal_and_opens_what_was_scanned(db_url, admin, engine):
    async def scenario(app, pilot, stock) -> None:
        await scan(app, pilot, stock["spare"])
        await scan(app, pilot, stock["other"])
        assert isinstance(app.screen, SpecimenScreen)
        assert app.screen.accession_id == stock["other"] and app.screen.proposal is None
        await pilot.press("enter")  # nothing proposed any more: Enter moves nothing
        await settle(app, pilot)
        assert _where(app, admin, stock["tube"]) == (stock["box"], "B2")
        assert _where(app, admin, stock["other"]) == (stock["box"], "B3")

    _run(db_url, admin, scenario)


def test_u_takes_the_last_move_back(db_url, admin, engine):
    async def scenario(app, pilot, stock) -> None:
        await scan(app, pilot, stock["spare"])
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("u")
        await settle(app, pilot)
        assert _where(app, admin, stock["tube"]) == (stock["box"], "B2")
        assert _events(app, admin, stock["tube"])[-1] == ("moved", UNDO_REASON)
        assert "Bench box B2" in str(app.screen.query_one("#detail", Static).content)
        await pilot.press("u")  # only the last move, once
        await settle(app, pilot)
        assert "No move to undo this session" in _notices(app)
        assert len(_events(app, admin, stock["tube"])) == 3

    _run(db_url, admin, scenario)


def test_u_refuses_once_the_tube_was_moved_elsewhere(db_url, admin, engine):
    async def scenario(app, pilot, stock) -> None:
        await scan(app, pilot, stock["spare"])
        await pilot.press("enter")
        await settle(app, pilot)
        with uow(app.database.engine) as session:  # another terminal moves it on
            custody.move(
                session, actor=admin, accession=stock["tube"], destination=stock["spare"],
                position="J10", reason="reorganised",
            )  # fmt: skip
        events = _events(app, admin, stock["tube"])
        await pilot.press("u")
        await settle(app, pilot)
        assert _where(app, admin, stock["tube"]) == (stock["spare"], "J10")
        assert _events(app, admin, stock["tube"]) == events
        assert any("not where the last move put it" in n for n in _notices(app))
        assert "Spare J10" in str(app.screen.query_one("#detail", Static).content)  # reloaded

    _run(db_url, admin, scenario)
