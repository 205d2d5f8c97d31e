"""The first run of the embedded database offers the demo cohort; nothing else ever does.

The offer exists only for the embedded SQLite database, so these tests run on SQLite; the
PostgreSQL one checks that an empty server database is not offered it.
"""

import asyncio

from textual.widgets import Label
from tui_helpers import settle, sign_in

from biobank.bootstrap import open_database
from biobank.services.demo import is_empty, seed_demo
from biobank.services.identity import actor_for
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.first_run import FirstRunScreen
from tui.screens.home import HomeScreen
from tui.screens.sign_in import SignInScreen


def _app(url: str) -> BiobankApp:
    settings = Settings(database_url=url, workstation="bench-1")
    return BiobankApp(settings=settings, database=open_database(settings))


def _empty(app: BiobankApp) -> bool:
    with app.database.unit_of_work(readonly=True) as session:
        return is_empty(session)


def test_yes_loads_the_demo_and_its_technician_signs_in(tmp_path):
    async def scenario():
        app = _app(f"sqlite:///{tmp_path / 'biobank.db'}")
        async with app.run_test() as pilot:
            await settle(app, pilot)
            assert isinstance(app.screen, FirstRunScreen)
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
