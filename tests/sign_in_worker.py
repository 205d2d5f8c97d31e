"""One workstation typing wrong PINs, run in its own spawned process by tests/test_sign_in.py:
every process starts at once, each attempt its own unit of work, as bench terminals would.

A process imports this module by name, so it holds only what a child needs.
"""

from __future__ import annotations

import traceback

from biobank.db import make_engine, uow
from biobank.errors import DatabaseUnavailable
from biobank.services.identity import SignInAttempt, sign_in

START_TIMEOUT_S = 60
ATTEMPTS = 10  # tries of one sign-in that finds the database busy (SQLite's wait ran out)


def wrong_pins(url, username, workstation, attempts, start, results) -> None:
    """Put the refusals of `attempts` wrong PINs for `username` (or a traceback) on `results`."""
    try:
        engine = make_engine(url)
        with engine.connect():  # connected before the start, so that the attempts overlap
            pass
        start.wait(timeout=START_TIMEOUT_S)
        refusals = [_wrong_pin(engine, username, workstation).refusal for _ in range(attempts)]
        engine.dispose()
        results.put(refusals)
    except Exception:
        results.put(traceback.format_exc())


def _wrong_pin(engine, username: str, workstation: str) -> SignInAttempt:
    """One sign-in; on SQLite tried again while the file is too busy to take it, as a person
    at the bench would (nothing of a refused try is kept: it counts once). PostgreSQL never
    refuses one: a sign-in waits for the one before it."""
    for _ in range(ATTEMPTS):
        try:
            with uow(engine) as session:
                return sign_in(session, username=username, pin="0000", workstation=workstation)
        except DatabaseUnavailable:
            if engine.dialect.name != "sqlite":
                raise
    raise RuntimeError(f"the database was busy {ATTEMPTS} times in a row")
