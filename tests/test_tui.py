"""The workstation driven as a technician would: typing at human speed, scanning in bursts."""

import asyncio
import gc

import sqlalchemy as sa
from inventory import NOW, accession_tube
from textual.widgets import Static
from tui_helpers import make_app, scan, settle, sign_in

from biobank.db import uow
from biobank.services import custody, specimens, storage, users
from biobank.services import scan as scans
from tui.app import PAINT_PERIOD
from tui.screens import box as box_screen
from tui.screens.box import BoxScreen
from tui.screens.home import HomeScreen
from tui.screens.sign_in import SignInScreen
from tui.screens.specimen import SpecimenScreen
from tui.widgets.box_grid import BoxGrid


def _stock(engine, admin) -> dict:
    """A box with one tube of the first demo participant."""
    with uow(engine) as session:
        box = storage.add_unit(session, actor=admin, kind="box", name="Bench box", grid=(9, 9))
        other = storage.add_unit(session, actor=admin, kind="box", name="Spare", grid=(10, 10))
        code = session.execute(sa.text("SELECT code FROM participant ORDER BY code")).scalar()
        tube = accession_tube(
            session, admin, code, visit="baseline", collected_at=NOW, destination=box.barcode,
            position="B2",
        )  # fmt: skip
        users.add_user(session, actor=admin, username="badgeuser", role="technician",
                       badge="BADGE-0042")  # fmt: skip
    return {"box": box.barcode, "other": other.barcode, "tube": tube.accession_id}


def test_sign_in_shows_the_inventory_and_locks(db_url, admin, engine):
    async def scenario():
        app = make_app(db_url, admin)
        async with app.run_test() as pilot:
            assert isinstance(app.screen, SignInScreen)
            assert gc.get_freeze_count() == 0
            await sign_in(app, pilot)
            assert isinstance(app.screen, HomeScreen) and app.actor.username == "tech"
            await settle(app, pilot)
            assert "Participants: 5" in str(app.screen.query_one("#overview", Static).content)
            assert gc.get_freeze_count() > 0  # what start-up built, out of the collector's way
            # a changed screen is painted within a few ms, not Textual's 1/60 s (a Textual
            # that no longer reads the period there would leave scans' views that much slower)
            assert app.screen._update_timer._interval == PAINT_PERIOD
            await pilot.press("ctrl+l")
            await pilot.pause()
            assert isinstance(app.screen, SignInScreen) and app.actor is None
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_wrong_pins_are_refused_then_locked_and_a_badge_signs_in(db_url, admin, engine):
    async def scenario():
        app = make_app(db_url, admin)
        _stock(app.database.engine, admin)
        async with app.run_test() as pilot:
            await sign_in(app, pilot, pin="9999")
            assert isinstance(app.screen, SignInScreen)
            assert any("wrong PIN" in n.message for n in app._notifications)
            for _ in range(4):  # five in a row lock PIN sign-in, right PIN or not
                await sign_in(app, pilot, pin="9999")
            await sign_in(app, pilot)
            assert app.actor is None
            assert any("tech is locked after 5 wrong PINs" in n.message for n in app._notifications)
            await scan(app, pilot, "BADGE-0042")
            assert app.actor is not None and app.actor.username == "badgeuser"
        app.database.engine.dispose()

    asyncio.run(scenario())


def _recorded(read, app, screens: list):
    """`read`, noting which screen was shown when it was called."""

    def recorded(*args, **kwargs):
        screens.append(type(app.screen))
        return read(*args, **kwargs)

    return recorded


def test_scan_a_tube_then_a_box_moves_it(db_url, admin, engine, monkeypatch):
    app = make_app(db_url, admin)
    loaded_under = []  # the screen shown when a tube's view was read
    monkeypatch.setattr(scans, "specimen_view", _recorded(scans.specimen_view, app, loaded_under))

    async def scenario():
        stock = _stock(app.database.engine, admin)
        async with app.run_test() as pilot:
            await sign_in(app, pilot)
            focused = app.focused
            await scan(app, pilot, stock["tube"].lower())  # Caps Lock off: still found
            assert isinstance(app.screen, SpecimenScreen)
            # read with the scan, in its worker: the screen is drawn once, with the tube
            assert loaded_under == [HomeScreen]
            assert focused is None or getattr(focused, "value", "") == ""  # nothing typed into it
            detail = str(app.screen.query_one("#detail", Static).content)
            assert f"{stock['box']}" not in detail and "Bench box B2" in detail
            await scan(app, pilot, stock["other"])  # proposes the move; Enter makes it
            await pilot.press("enter")
            await settle(app, pilot)
            detail = str(app.screen.query_one("#detail", Static).content)
            assert "Spare A1" in detail
            await pilot.press("o")
            await settle(app, pilot)
            assert "CHECKED_OUT" in str(app.screen.query_one("#specimen-title", Static).content)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_misread_says_so_loudly(db_url, admin, engine):
    async def scenario():
        app = make_app(db_url, admin)
        stock = _stock(app.database.engine, admin)
        wrong = stock["tube"][:-1] + ("B" if stock["tube"][-1] != "B" else "C")
        async with app.run_test() as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, wrong)
            assert isinstance(app.screen, HomeScreen)
            assert any(n.title == "MISREAD" for n in app._notifications)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_box_scan_opens_its_grid_and_enter_opens_a_tube(db_url, admin, engine, monkeypatch):
    app = make_app(db_url, admin)
    read_under = []  # the screen shown when a box's view was read
    for module in (scans, box_screen):  # the scan reads it as it resolves
        monkeypatch.setattr(module, "box_view", _recorded(module.box_view, app, read_under))

    async def scenario():
        stock = _stock(app.database.engine, admin)
        async with app.run_test(size=(80, 24)) as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, stock["box"])
            assert isinstance(app.screen, BoxScreen)
            assert read_under == [HomeScreen]  # read with the scan: the grid drawn once
            grid = app.screen.query_one(BoxGrid)
            assert grid.region.right <= 80 and grid.region.bottom <= 24
            for key in ("down", "right", "enter"):
                await pilot.press(key)
                await pilot.pause(0.1)
            await settle(app, pilot)
            assert isinstance(app.screen, SpecimenScreen)
            assert app.screen.accession_id == stock["tube"]
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_every_binding_has_an_id():
    import importlib
    import pkgutil

    from textual.binding import Binding

    import tui.screens
    from tui.app import BiobankApp

    classes = [BiobankApp, BoxGrid]
    for module in pkgutil.iter_modules(tui.screens.__path__):
        loaded = importlib.import_module(f"tui.screens.{module.name}")
        classes += [v for v in vars(loaded).values() if isinstance(v, type)]
    ours = {cls for cls in classes if cls.__module__.startswith("tui.")}
    bindings = [
        b for cls in ours for b in cls.__dict__.get("BINDINGS", []) if isinstance(b, Binding)
    ]
    assert len(bindings) > 30
    assert [b for b in bindings if not b.id] == []


def test_an_admin_reads_a_tubes_audit_entries(db_url, admin, engine):
    async def scenario():
        app = make_app(db_url, admin)
        stock = _stock(app.database.engine, admin)
        with uow(app.database.engine) as session:
            users.set_pin(session, actor=admin, username="admin", pin="9876")
        async with app.run_test() as pilot:
            await sign_in(app, pilot, "admin", "9876")
            await scan(app, pilot, stock["tube"])
            await pilot.press("a")
            await settle(app, pilot)
            from textual.widgets import DataTable

            table = app.screen.query_one(DataTable)
            assert table.row_count == 1 and "specimen.accessioned" in str(table.get_row_at(0))
        app.database.engine.dispose()

    asyncio.run(scenario())


class Clock:
    """The app's clock, moved on by hand: hours pass in a test at once."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_left_for_hours_locks_and_the_same_user_resumes_reloaded(db_url, admin, engine):
    async def scenario():
        app = make_app(db_url, admin, idle_lock_minutes=10)
        app.clock = Clock()
        stock = _stock(app.database.engine, admin)
        async with app.run_test() as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, stock["tube"])
            assert isinstance(app.screen, SpecimenScreen)
            app.clock.now += 9 * 60
            app._check_idle()
            assert app.actor is not None  # nine idle minutes: still open
            app.clock.now += 3 * 3600  # left open over lunch
            app._check_idle()
            await pilot.pause()
            assert app.actor is None and isinstance(app.screen, SignInScreen)
            assert not app.screen.query(Static).filter("#detail")  # nothing of the tube shows
            with uow(engine) as session:  # meanwhile, at another terminal
                custody.check_out(session, actor=admin, accession=stock["tube"])
            await sign_in(app, pilot)
            assert isinstance(app.screen, SpecimenScreen) and app.actor.username == "tech"
            await settle(app, pilot)
            assert "CHECKED_OUT" in str(app.screen.query_one("#specimen-title", Static).content)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_someone_else_unlocking_starts_afresh(db_url, admin, engine):
    async def scenario():
        app = make_app(db_url, admin)
        stock = _stock(app.database.engine, admin)
        async with app.run_test() as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, stock["tube"])
            await pilot.press("ctrl+l")
            await pilot.pause()
            await sign_in(app, pilot, "pi", "2222")
            assert isinstance(app.screen, HomeScreen) and app.actor.username == "pi"
            assert not any(isinstance(s, SpecimenScreen) for s in app.screen_stack)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_a_stale_view_reloads_instead_of_overwriting_another_terminals_change(
    db_url, admin, engine
):
    async def scenario():
        app = make_app(db_url, admin)
        stock = _stock(app.database.engine, admin)
        async with app.run_test() as pilot:
            await sign_in(app, pilot)
            await scan(app, pilot, stock["tube"])
            title = app.screen.query_one("#specimen-title", Static)
            assert "AVAILABLE" in str(title.content)
            with uow(engine) as session:  # another terminal checks the tube out and back in
                custody.check_out(session, actor=admin, accession=stock["tube"])
                custody.check_in(session, actor=admin, accession=stock["tube"])
            await pilot.press("t")  # a thaw, recorded against what this screen last saw
            await settle(app, pilot)
            assert any("changed" in n.message for n in app._notifications)
            with uow(engine) as session:
                shown = specimens.show_specimen(session, actor=admin, accession=stock["tube"])
            assert shown.specimen.freeze_thaw_count == 0  # nothing overwritten
            assert app.screen.version == shown.specimen.version  # the view was reloaded
            await pilot.press("t")  # now against what is there
            await settle(app, pilot)
            with uow(engine) as session:
                shown = specimens.show_specimen(session, actor=admin, accession=stock["tube"])
            assert shown.specimen.freeze_thaw_count == 1
        app.database.engine.dispose()

    asyncio.run(scenario())
