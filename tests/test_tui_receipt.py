"""Receiving a shipment at the workstation, driven as a technician works (Pilot, scans in
bursts): Ctrl+B, the shipment's code typed, the box scanned, then the tubes; one marked thawed
on arrival with `d`, a tube not on the manifest refused loudly as unexpected, and `c` closing
the receipt with the tube never scanned missing."""

from __future__ import annotations

import asyncio

from textual.widgets import Static
from tui_helpers import scan, settle, sign_in, type_text

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.services import shipment_receipt, users
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.receipt import ReceiptScreen


def test_a_technician_scans_a_shipment_in(sent, receiver):
    shipment, manifest, tubes = sent
    engine, admin, box = receiver
    url = engine.url.render_as_string(hide_password=False)
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tech", role="technician", pin="1111")
        shipment_receipt.receive_manifest(
            session, actor=admin, document=shipment_receipt.read_manifest(manifest), study="EXT"
        )

    async def scenario():
        app = BiobankApp(
            settings=Settings(database_url=url, workstation="receiving-1"),
            database=open_database(Settings(database_url=url)),
        )
        async with app.run_test(size=(100, 30)) as pilot:
            await sign_in(app, pilot)
            await pilot.press("ctrl+b")
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, ReceiptScreen)
            await type_text(app, pilot, shipment)
            assert "4 to scan in, unplaced" in str(
                screen.query_one("#receipt-prompt", Static).content
            )
            await scan(app, pilot, box)
            await scan(app, pilot, tubes[0])
            await pilot.press("d")
            await settle(app, pilot)
            await scan(app, pilot, tubes[1])
            await scan(app, pilot, "XYZ-0001")
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert any("XYZ-0001 is not on the manifest" in e for e in errors), errors
            table = screen.query_one("#receipt-lines")
            assert [str(table.rows[t][4]) for t in tubes[:2]] == ["received", "damaged"]
            assert str(table.rows["XYZ-0001"][4]) == "unexpected"
            await pilot.press("c")
            await settle(app, pilot)
            title = str(screen.query_one("#receipt-title", Static).content)
            assert "closed: 1 damaged, 2 missing, 1 received, 1 unexpected" in title, title
        app.database.engine.dispose()

    asyncio.run(scenario())
    with engine.connect() as connection:
        placed = connection.exec_driver_sql(
            "SELECT count(*) FROM specimen WHERE box_id IS NOT NULL"
        ).scalar()
    assert placed == 2
