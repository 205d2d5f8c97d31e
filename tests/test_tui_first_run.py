"""Starting the workstation: the sign-in screen shows while the database opens behind it, and
the first run of the embedded database offers the demo cohort; nothing else ever does.

The offer exists only for the embedded SQLite database, so those tests run on SQLite; the
PostgreSQL one checks that an empty server database is not offered it.
"""

import asyncio
import threading
import time
from functools import partial

import pytest
from textual.app import App
from textual.widgets import Label
from tui_helpers import HUMAN_GAP, make_app, settle, sign_in

import tui.app as tui_app
from biobank.bootstrap import FIRST_ADMIN_HINT, open_database
from biobank.errors import DatabaseUnavailable
from biobank.services.demo import seed_demo
from biobank.services.identity import actor_for
from biobank.services.overview import is_empty
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.first_run import FirstRunScreen
from tui.screens.home import HomeScreen
from tui.screens.sign_in import SignInScreen


def _app(url: str, *, opening: bool = False) -> BiobankApp:
    """The app on the database at `url`, open already or, as `biobank` starts it, `opening`
    in a thread behind the sign-in screen."""
    settings = Settings(database_url=url, workstation="bench-1")
    opened = partial(open_database, settings)
    return BiobankApp(settings=settings, database=opened if opening else opened())


def _held_open(settings: Settings, opened) -> tuple[BiobankApp, threading.Event]:
    """An app whose database opens (`opened()`) only once the returned gate is set."""
    gate = threading.Event()

    def opening():
        assert gate.wait(30)
        return opened()

    return BiobankApp(settings=settings, database=opening), gate


def _empty(app: BiobankApp) -> bool:
    with app.database.unit_of_work(readonly=True) as session:
        return is_empty(session)


def test_yes_loads_the_demo_and_its_technician_signs_in(tmp_path):
    async def scenario():
        app = _app(f"sqlite:///{tmp_path / 'biobank.db'}", opening=True)
        async with app.run_test() as pilot:
            await settle(app, pilot)
            assert isinstance(app.screen, FirstRunScreen)
            assert any(n.message == FIRST_ADMIN_HINT for n in app._notifications)
            assert "tech / 1111)? [y/n]" in str(app.screen.query_one(Label).render())
            await pilot.press("y")
            await settle(app, pilot)
            assert isinstance(app.screen, SignInScreen)
            assert any("Demo cohort loaded" in n.message for n in app._notifications)
            await sign_in(app, pilot, "tech", "1111")
            assert isinstance(app.screen, HomeScreen)
        assert not _empty(app)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_no_leaves_the_inventory_empty(tmp_path):
    url = f"sqlite:///{tmp_path / 'biobank.db'}"

    async def scenario():
        app = _app(url)
        async with app.run_test() as pilot:
            await settle(app, pilot)
            assert isinstance(app.screen, FirstRunScreen)
            await pilot.press("n")
            await settle(app, pilot)
            assert isinstance(app.screen, SignInScreen)
        assert _empty(app)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_an_inventory_with_data_is_not_offered_the_demo(tmp_path):
    app = _app(f"sqlite:///{tmp_path / 'biobank.db'}")
    with app.database.unit_of_work() as session:
        admin = actor_for(session, username="admin", workstation="bench-1")
        seed_demo(session, actor=admin, participants=1)

    async def scenario():
        async with app.run_test() as pilot:
            await settle(app, pilot)
            assert isinstance(app.screen, SignInScreen)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_an_empty_server_database_is_not_offered_the_demo(pg_engine):
    async def scenario():
        app = _app(pg_engine.url.render_as_string(hide_password=False))
        assert _empty(app)
        async with app.run_test() as pilot:
            await settle(app, pilot)
            assert isinstance(app.screen, SignInScreen)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_the_sign_in_screen_shows_while_the_database_opens(db_url, admin):
    """Someone may type their name and PIN before the database is open: the sign-in then
    waits for it, and goes through."""
    database = make_app(db_url, admin).database  # the demo's technician: tech / 1111
    settings = Settings(database_url=db_url, workstation="bench-1")
    app, gate = _held_open(settings, lambda: database)

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.pause(0.2)
            assert isinstance(app.screen, SignInScreen)
            for key in ("t", "e", "c", "h", "enter", "1", "1", "1", "1", "enter"):
                await pilot.press(key)
                await pilot.pause(HUMAN_GAP)
            await pilot.pause(0.3)
            assert isinstance(app.screen, SignInScreen) and app.actor is None
            gate.set()
            await settle(app, pilot)
            assert isinstance(app.screen, HomeScreen) and app.actor.username == "tech"

    asyncio.run(scenario())
    database.engine.dispose()


def test_a_database_that_cannot_open_ends_the_workstation_with_its_error(tmp_path, monkeypatch):
    """The entry point reports it (one line, the error's exit code), as before the screen."""
    refused = DatabaseUnavailable("cannot open the database at postgresql://db/x: refused")

    def opening():
        raise refused

    async def scenario():
        app = BiobankApp(settings=Settings(database_url="postgresql://db/x"), database=opening)
        async with app.run_test() as pilot:
            await settle(app, pilot)
        assert app.return_code == refused.exit_code and app.opening_failure() is refused

    asyncio.run(scenario())
    monkeypatch.setattr(BiobankApp, "run", lambda app: App.run(app, headless=True))
    with pytest.raises(DatabaseUnavailable) as raised:
        tui_app.run(settings=Settings(database_url="postgresql://db/x"), database=opening)
    assert raised.value is refused


def test_someone_already_typing_is_not_asked_about_the_demo(tmp_path):
    """The database opened while a name was being typed: the offer would take its letters
    (a y, an n) as the answer, so the workstation only says how to load the demo."""
    url = f"sqlite:///{tmp_path / 'biobank.db'}"
    settings = Settings(database_url=url, workstation="bench-1")
    app, gate = _held_open(settings, partial(open_database, settings))

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.pause(0.2)
            for key in "ray":
                await pilot.press(key)
                await pilot.pause(HUMAN_GAP)
            gate.set()
            await settle(app, pilot)
            assert isinstance(app.screen, SignInScreen)
            assert app.screen.query_one("#username").value == "ray"
            assert any("`biobank demo`" in n.message for n in app._notifications)
        assert _empty(app)
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_quitting_while_the_database_opens_does_not_wait_for_it():
    """A server slow to answer (or not at all) does not hold the closed workstation, even
    with a sign-in already submitted, waiting for it."""
    gate = threading.Event()

    def opening():
        gate.wait(60)
        raise DatabaseUnavailable("cannot open the database at postgresql://db/x: timed out")

    async def scenario():
        app = BiobankApp(settings=Settings(database_url="postgresql://db/x"), database=opening)
        async with app.run_test() as pilot:
            await pilot.pause(0.2)
            for key in ("t", "e", "c", "h", "enter", "1", "1", "1", "1", "enter"):
                await pilot.press(key)
                await pilot.pause(HUMAN_GAP)
            await pilot.press("ctrl+q")

    began = time.monotonic()
    try:
        asyncio.run(scenario())
    finally:
        gate.set()
    assert time.monotonic() - began < 10


def test_a_key_the_scan_detector_still_holds_does_not_answer_the_demo_offer(tmp_path):
    """The detector holds a first key back a moment (it may begin a scan): the sign-in looks
    untouched, but that key belongs to the name being typed."""
    url = f"sqlite:///{tmp_path / 'biobank.db'}"
    open_database(Settings(database_url=url)).engine.dispose()  # created: it opens at once
    settings = Settings(
        database_url=url, workstation="bench-1", scanner={"max_key_interval_ms": 500}
    )
    app, gate = _held_open(settings, partial(open_database, settings))

    async def scenario():
        async with app.run_test() as pilot:
            await pilot.pause(0.2)
            await pilot.press("n")
            assert app.detector.holding
            gate.set()
            await settle(app, pilot)
            assert isinstance(app.screen, SignInScreen)
            assert app.screen.query_one("#username").value == "n"
        app.database.engine.dispose()

    asyncio.run(scenario())
