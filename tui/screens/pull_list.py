"""The pull list: tubes whose participant withdrew consent with `destroy` or `return`, in
freezer order. The technician scans each tube as it comes out; the service records it disposed
(a custody event), and the line is marked done. A scan of a tube not on the list is refused by
the service, by name, and changes nothing.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from biobank.services import consent
from biobank.services.consent import PullItem
from biobank.services.scan import ScanResult
from biobank.services.specimen_read import SpecimenRead
from tui.screens.base import WorkScreen

DONE = {"destroy": "✓ destroyed", "return": "✓ returned"}


class PullListScreen(WorkScreen):
    SCAN_HELP = "take the scanned tube off the pull list (recorded as disposed)"
    BINDINGS = [Binding("r", "refresh", "Refresh", id="refresh_pull_list")]  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.items: list[PullItem] = []
        self.pulled: set[str] = set()

    def compose_body(self) -> ComposeResult:
        yield Static("Pull list", id="pull-title", classes="title")
        yield Static("Loading…", id="pull-prompt", classes="prompt")
        table = DataTable(id="pull-lines", zebra_stripes=True, cursor_type="row")
        table.add_columns("tube", "box", "pos", "disposition", "participant", "done")
        yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_refresh()

    def action_refresh(self) -> None:
        def loaded(items: list[PullItem]) -> None:
            self.items, self.pulled = items, set()
            self.show()

        self.app.run_db(
            lambda session: consent.pull_list(session, actor=self.app.actor), loaded, readonly=True
        )

    def take_scan(self, result: ScanResult) -> bool:
        if result.kind == "specimen":
            accession = result.specimen.accession_id
        elif result.kind == "unknown" and result.code:
            accession = result.code
        else:
            return False
        if accession in self.pulled:
            self.app.notify(f"{accession} is pulled already", severity="warning")
            return True
        self.app.run_db(
            lambda session: consent.pull(session, actor=self.app.actor, accession=accession),
            self.pulled_one,
        )
        return True

    def pulled_one(self, read: SpecimenRead) -> None:
        if not any(item.accession_id == read.accession_id for item in self.items):
            self.action_refresh()  # put on the list elsewhere since this screen loaded it
        else:
            self.pulled.add(read.accession_id)
            self.show()
        self.app.notify(f"{read.accession_id} pulled: {read.status}")

    def show(self) -> None:
        left = [item for item in self.items if item.accession_id not in self.pulled]
        self.query_one("#pull-title", Static).update(
            f"Pull list (consent withdrawals): {len(left)} to pull, {len(self.pulled)} pulled"
        )
        if left:
            where = f"{left[0].box_barcode} {left[0].position}" if left[0].box_barcode else "—"
            prompt = f"Next: {left[0].accession_id} at {where}. Scan each tube as it comes out."
        else:
            prompt = "Nothing left to pull."
        self.query_one("#pull-prompt", Static).update(prompt)
        table = self.query_one(DataTable)
        table.clear()
        for item in self.items:
            done = item.accession_id in self.pulled
            table.add_row(
                item.accession_id,
                item.box_barcode or "not placed",
                item.position or "",
                item.disposition.value,
                item.participant_code,
                Text(DONE[item.disposition.value], style="green") if done else "to pull",
                key=item.accession_id,
            )
        if left:
            table.move_cursor(row=table.get_row_index(left[0].accession_id))
