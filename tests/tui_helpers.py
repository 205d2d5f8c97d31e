"""Driving the workstation as a technician: typing at human speed, scanning in bursts."""

from __future__ import annotations

from textual import events
from textual.keys import _character_to_key

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.services.demo import seed_demo
from biobank.settings import Settings
from tui.app import BiobankApp

HUMAN_GAP = 0.08  # seconds between a person's keys; a scanner's are far closer


def make_app(db_url: str, admin, *, participants: int = 5, **settings) -> BiobankApp:
    database = open_database(Settings(database_url=db_url))
    with uow(database.engine) as session:
        seed_demo(session, actor=admin, participants=participants, seed=1)
    return BiobankApp(
        settings=Settings(database_url=db_url, workstation="bench-1", **settings),
        database=database,
    )


async def settle(app, pilot) -> None:
    """Let held keys go and database workers finish (however loaded the machine is)."""
    await pilot.pause(0.1)
    for _ in range(100):
        if not app.detector.holding:
            break
        await pilot.pause(0.05)
    # a worker's result may start another (a scan resolved, then the pull it asks for)
    for _ in range(100):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if all(worker.is_finished for worker in app.workers):
            break


async def type_text(app, pilot, text: str, *, enter: bool = True) -> None:
    for character in text:
        await pilot.press(character)
        await pilot.pause(HUMAN_GAP)
    if enter:
        await pilot.press("enter")
    await settle(app, pilot)


async def scan(app, pilot, code: str) -> None:
    """A keyboard-wedge scanner: the whole code in one burst, then Enter, arriving at the
    driver as fast as a scanner types (Pilot's `press` waits between keys like a person)."""
    for character in code:
        key = character if character.isalnum() else _character_to_key(character)
        app._driver.send_message(events.Key(key, character))
    app._driver.send_message(events.Key("enter", "\r"))
    await settle(app, pilot)


async def sign_in(app, pilot, username: str = "tech", pin: str = "1111") -> None:
    await type_text(app, pilot, username)
    await type_text(app, pilot, pin)


async def until(app, pilot, condition, *, seconds: float = 10.0) -> None:
    """Wait for a view that loads in several steps (each step a worker started by the last)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
        await app.workers.wait_for_complete()
    assert condition(), "the screen did not get there in time"
