"""Tubes back from a shipment at the workstation, driven as a technician works (Pilot, scans in
bursts): Ctrl+G, the shipment's code typed, the box scanned, then the tubes by the labels they
shipped under; one with what is left typed (`q`) and a thaw away (`t`), one with all that was
sent; a tube the shipment did not send refused loudly, nothing changed."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa
from request_flow import send
from textual.widgets import Input, Static
from tui_helpers import scan, settle, sign_in, type_text

from biobank.bootstrap import open_database
from biobank.db import uow
from biobank.domain.vocabulary import Role
from biobank.services import users
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.shipment_return import ReturnScreen


def test_a_technician_scans_tubes_back_from_a_shipment(cohort_db, boxes, actors, tmp_path):
    shipment, manifest, tubes = send(cohort_db, actors, tmp_path, relabel=True)
    shipped = {i["accession_id"]: i for i in json.loads(manifest.read_text())["items"]}
    first, second, *_ = shipped  # S-… labels, as the tubes come back
    url = cohort_db.url.render_as_string(hide_password=False)
    with uow(cohort_db) as session:
        users.add_user(session, actor=actors[Role.admin], username="bench", role="technician",
                       pin="1111")  # fmt: skip

    async def scenario():
        app = BiobankApp(
            settings=Settings(database_url=url, workstation="bench-1"),
            database=open_database(Settings(database_url=url)),
        )
        async with app.run_test(size=(110, 30)) as pilot:
            await sign_in(app, pilot, "bench")
            await pilot.press("ctrl+g")
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, ReturnScreen)
            await type_text(app, pilot, shipment)
            prompt = screen.query_one("#return-prompt", Static)
            assert f"{len(tubes)} still out; scan the box" in str(prompt.content)
            await scan(app, pilot, first)  # before the box: refused, nothing changed
            await scan(app, pilot, boxes[0])
            await pilot.press("q")
            await type_text(app, pilot, "0,25")
            await pilot.press("t")
            await settle(app, pilot)
            await scan(app, pilot, first.lower())
            await scan(app, pilot, second)
            await scan(app, pilot, second)  # twice: it is back already
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert errors[0] == "Scan the box it goes into first", errors
            assert errors[1].endswith(f"is returned: no return against {shipment}"), errors
            table = screen.query_one("#return-lines")
            back = [k for k, row in table.rows.items() if str(row[4]) == "returned"]
            assert len(back) == 2 and str(prompt.content).startswith(f"{len(tubes) - 2} still")
            assert screen.query_one("#return-quantity", Input).value == ""
        app.database.engine.dispose()

    asyncio.run(scenario())
    with cohort_db.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT s.quantity, s.freeze_thaw_count, s.status, s.box_id IS NOT NULL "
                "FROM specimen s JOIN shipment_item i ON i.specimen_id = s.id "
                "WHERE i.status = 'returned' ORDER BY i.ship_code = :first DESC"
            ),
            {"first": first},
        ).all()
    assert [tuple(r) for r in rows] == [
        (0.25, 1, "available", True),
        (shipped[second]["quantity"], 0, "available", True),
    ]
