"""The terminal UI driven as a technician would: typing at the sign-in screen."""

import asyncio

from textual.widgets import Static

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.services.demo import seed_demo
from biobank.settings import Settings
from tui.app import BiobankApp, HomeScreen, SignInScreen


def _app(db_url: str, admin) -> BiobankApp:
    database = open_database(Settings(database_url=db_url))
    with uow(database.engine) as session:
        seed_demo(session, actor=admin, participants=5, seed=1)
    return BiobankApp(
        settings=Settings(database_url=db_url, workstation="bench-1"), database=database
    )


async def _type(pilot, text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")


def test_sign_in_shows_the_inventory_and_locks(db_url, admin):
    async def scenario():
        app = _app(db_url, admin)
        async with app.run_test() as pilot:
            assert isinstance(app.screen, SignInScreen)
            await _type(pilot, "tech")
            await _type(pilot, "1111")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, HomeScreen)
            assert app.actor.username == "tech"
            await app.workers.wait_for_complete()
            await pilot.pause()
            text = str(app.screen.query_one("#overview", Static).content)
            assert "Participants: 5" in text
            await pilot.press("ctrl+l")
            await pilot.pause()
            assert isinstance(app.screen, SignInScreen) and app.actor is None
        app.database.engine.dispose()

    asyncio.run(scenario())


def test_wrong_pin_is_refused_with_a_notification(db_url, admin):
    async def scenario():
        app = _app(db_url, admin)
        async with app.run_test() as pilot:
            await _type(pilot, "tech")
            await _type(pilot, "9999")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, SignInScreen)
            assert any("wrong PIN" in n.message for n in app._notifications)
        app.database.engine.dispose()

    asyncio.run(scenario())
