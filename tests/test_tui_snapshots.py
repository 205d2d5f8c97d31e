"""What the technician sees, compared with approved screenshots (pytest-textual-snapshot).

These test rendering, not the database, so they run on SQLite only (outside the both-engines
parametrization): one file in tmp_path built from fixed data, with every time shown fixed, at
a fixed terminal size. After an intended change of a screen, look at the new screenshots and
accept them with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from textual.widgets import Input
from tui_helpers import scan, settle, sign_in

from biobank.bootstrap import open_database
from biobank.models import SpecimenEvent
from biobank.services import custody, lineage, specimens, storage
from biobank.services.demo import seed_demo
from biobank.services.identity import actor_for
from biobank.settings import Settings
from tui.app import BiobankApp

SIZE = (80, 24)
COLLECTED = datetime(2025, 3, 1, 8, 10, tzinfo=UTC)
EVENTS_AT = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)  # custody events are stamped now: fixed


@pytest.fixture
def lab(tmp_path) -> Iterator[dict]:
    """The demo cohort (3 participants) and a 10x10 box holding a serum tube, its four
    aliquots, a plasma tube and a checked-out buffy coat."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'snap.db'}",
        workstation="bench-1",
        visit_gap_days=36500,  # the demo's visits are years before COLLECTED: not shown here
    )
    database = open_database(settings)
    with database.unit_of_work() as session:
        admin = actor_for(session, username="admin", workstation="bench-1")
        seed_demo(session, actor=admin, participants=3, seed=1)
        box = storage.add_unit(session, actor=admin, kind="box", name="Bench box", grid=(10, 10))
        code = session.execute(sa.text("SELECT code FROM participant ORDER BY code")).scalar()

        def tube(specimen_type: str, position: str) -> str:
            return specimens.accession(
                session, actor=admin, participant=code, visit="baseline",
                specimen_type=specimen_type, quantity=2000, unit="uL", collected_at=COLLECTED,
                received_at=COLLECTED + timedelta(minutes=50),
                processed_at=COLLECTED + timedelta(hours=1), precentrifugation_temperature="RT",
                destination=box.barcode, position=position,
            ).accession_id  # fmt: skip

        serum = tube("SER", "A1")
        lineage.aliquot(
            session, actor=admin, parent=serum, count=4, volume=250, destination=box.barcode
        )
        tube("PL1", "C3")
        buffy = tube("BUF", "D7")
        custody.check_out(session, actor=admin, accession=buffy)
        session.execute(sa.update(SpecimenEvent).values(occurred_at=EVENTS_AT))
    app = BiobankApp(settings=settings, database=database)
    yield {"app": app, "box": box.barcode, "serum": serum, "participant": code}
    database.engine.dispose()


async def steady(pilot) -> None:
    """Database work done and the cursor not blinking: the same picture on every run."""
    await settle(pilot.app, pilot)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False


def test_sign_in_screen(snap_compare, lab):
    assert snap_compare(lab["app"], terminal_size=SIZE, run_before=steady)


def test_a_scanned_tube_shows_its_detail(snap_compare, lab):
    app = lab["app"]

    async def scan_the_serum(pilot) -> None:
        await sign_in(app, pilot)
        await scan(app, pilot, lab["serum"])
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=scan_the_serum)


def test_a_scanned_box_shows_its_grid(snap_compare, lab):
    app = lab["app"]

    async def scan_the_box(pilot) -> None:
        await sign_in(app, pilot)
        await scan(app, pilot, lab["box"])
        await pilot.press("down", "down", "right", "right")  # onto the plasma tube, C3
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=scan_the_box)


def test_the_accession_form_shows_a_refusal_at_its_field(snap_compare, lab):
    app = lab["app"]
    typed = {
        "collected_at": "2025-03-01 08:10",
        "processed_at": "2025-03-01 09:10",
        "quantity": "500",
        "count": "4",
        "volume": "250",  # 4 x 250 uL from a 500 uL tube: refused
    }

    async def save_too_many_aliquots(pilot) -> None:
        await sign_in(app, pilot)
        await pilot.press("ctrl+n")
        await scan(app, pilot, lab["participant"])
        for field, text in typed.items():
            app.screen.query_one(f"#{field}", Input).value = text
        await pilot.press("ctrl+s")
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=save_too_many_aliquots)
