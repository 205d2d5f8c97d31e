"""PostgreSQL restarted while the CLI or the terminal UI is working.

A restart (`pg_ctl restart`, fast shutdown) ends every session of the server: each client
finds its connection gone, mid-statement or at its next one. That is done here to one database
at a time, with `pg_terminate_backend`, so the other tests on the same server go on. What must
hold: a clear error, nothing half-written, and the next piece of work connects again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import sqlalchemy as sa
from conftest import postgres_base_url
from inventory import NOW, accession_tube
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from textual.widgets import Static
from tui_helpers import make_app, scan, settle, sign_in

from biobank.db import make_engine, uow
from biobank.services import audit, specimens, storage
from tui.screens.specimen import SpecimenScreen

pytestmark = pytest.mark.parametrize("engine_name", ["postgres"], indirect=True)


class Restart:
    """Ends every session of one database, as a server restart does."""

    def __init__(self, url: str) -> None:
        self.database = make_url(url).database
        self.done = 0

    def now(self) -> None:
        base = make_url(postgres_base_url()).set(drivername="postgresql")
        with psycopg.connect(base.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.database,),
            )
        self.done += 1

    @contextmanager
    def at(self, statement: str, *, nth: int = 1) -> Iterator[None]:
        """Restart just before the `nth` statement starting with `statement` (or "COMMIT")
        that any connection to the database sends; once."""
        seen = 0

        def before(connection, *args) -> None:
            nonlocal seen
            if connection.engine.url.database != self.database:
                return
            sql = args[1] if args else "COMMIT"
            if sql.lstrip().upper().startswith(statement):
                seen += 1
                if seen == nth:
                    self.now()

        hook = ("commit", before) if statement == "COMMIT" else ("before_cursor_execute", before)
        event.listen(Engine, *hook)
        try:
            yield
        finally:
            event.remove(Engine, *hook)


def _count(url: str, table: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        counted = connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return counted


@pytest.mark.parametrize(
    ("statement", "nth", "words"),
    [
        ("INSERT", 300, "nothing of this was saved"),
        ("COMMIT", 1, "may or may not have been kept"),
    ],
)
def test_a_restart_under_a_cli_command_keeps_nothing_and_the_next_run_works(
    fresh_cli, empty_db_url, statement, nth, words
):
    restart = Restart(empty_db_url)
    before = _count(empty_db_url, "audit_entry")
    with restart.at(statement, nth=nth):
        failed = fresh_cli("-u", "admin", "demo", "--participants", "40", code=8)
    assert restart.done == 1
    assert failed.stdout == ""
    assert "connection to the database was lost" in failed.stderr and words in failed.stderr
    assert "Traceback" not in failed.stderr
    assert _count(empty_db_url, "participant") == 0 and _count(empty_db_url, "specimen") == 0
    assert _count(empty_db_url, "audit_entry") == before
    fresh_cli("-u", "admin", "demo", "--participants", "40")  # the server is back: it connects
    assert _count(empty_db_url, "participant") == 40
    assert "intact" in fresh_cli("-u", "admin", "audit", "verify").stderr


def test_a_restart_under_the_tui_is_one_refused_action_then_it_reconnects(db_url, admin, engine):
    async def scenario():
        app = make_app(db_url, admin)
        with uow(app.database.engine) as session:
            box = storage.add_unit(session, actor=admin, kind="box", name="Bench", grid=(9, 9))
            code = session.execute(sa.text("SELECT min(code) FROM participant")).scalar_one()
            tube = accession_tube(
                session, admin, code, visit="baseline", collected_at=NOW, destination=box.barcode
            ).accession_id
        restart = Restart(db_url)
        async with app.run_test() as pilot:
            await sign_in(app, pilot)
            restart.now()  # while the technician reads the screen
            await scan(app, pilot, tube)  # the pooled connection is dead: a new one, unseen
            assert isinstance(app.screen, SpecimenScreen)
            with restart.at("UPDATE"):
                await pilot.press("o")  # check out, as the server goes away
                await settle(app, pilot)
            assert restart.done == 2
            assert any("connection to the database was lost" in n.message
                       for n in app._notifications)  # fmt: skip
            with uow(engine) as session:
                shown = specimens.show_specimen(session, actor=admin, accession=tube)
            assert shown.specimen.status == "available"  # nothing half-written
            await pilot.press("o")  # again: connected again
            await settle(app, pilot)
            title = app.screen.query_one("#specimen-title", Static)
            assert "CHECKED_OUT" in str(title.content)
        app.database.engine.dispose()
        with uow(engine) as session:
            assert audit.verify_chain(session, actor=admin).entries > 0  # raises if broken

    asyncio.run(scenario())


def test_a_pooled_connection_is_pinged_only_when_the_server_has_ended_it(db_url, monkeypatch):
    """A scan pays no round trip to learn its connection is well; one the server ended is
    found out at checkout, before the work, and replaced."""
    engine = make_engine(db_url)
    pings = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or ping(c))

    def backend() -> int:
        with uow(engine, lookup=True) as session:
            return session.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()

    first = backend()
    assert [backend() for _ in range(20)] == [first] * 20  # the same connection, well
    assert pings == []
    Restart(db_url).now()
    assert backend() != first  # connected afresh, no error
    assert len(pings) == 1
    engine.dispose()
