"""The pull list: tubes whose participant withdrew consent with `destroy` or `return`, in
freezer order. The technician scans each tube as it comes out; the service records it disposed
(a custody event), and the line is marked done. A scan of a tube not on the list is refused by
the service, by name, and changes nothing.

The list is drawn a line at a time (`LineTable`) and built once per load; a scan changes its
own line and the counts, so a list of ten thousand tubes answers a scan as fast as one of ten.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from biobank.services import pulls
from biobank.services.pulls import PullItem
from biobank.services.scan import Scan, scanned_tube
from biobank.services.specimen_read import SpecimenRead
from tui.screens.base import WorkScreen
from tui.text import plain
from tui.widgets.line_table import LineTable

DONE = {"destroy": "✓ destroyed", "return": "✓ returned"}
COLUMNS = ("tube", "box", "pos", "disposition", "participant", "done")
DONE_COLUMN = COLUMNS.index("done")


class PullListScreen(WorkScreen):
    SCAN_HELP = "take the scanned tube off the pull list (recorded as disposed)"
    BINDINGS = [Binding("r", "refresh", "Refresh", id="refresh_pull_list")]  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, PullItem] = {}  # by accession ID, in freezer order
        self.pulled: set[str] = set()

    def compose_body(self) -> ComposeResult:
        yield Static("Pull list", id="pull-title", classes="title")
        yield Static("Loading…", id="pull-prompt", classes="prompt")
        yield LineTable(*COLUMNS, id="pull-lines")

    def on_mount(self) -> None:
        self.query_one(LineTable).focus()
        self.action_refresh()

    def action_refresh(self) -> None:
        def loaded(items: list[PullItem]) -> None:
            self.items, self.pulled = {item.accession_id: item for item in items}, set()
            self.show()

        self.app.run_db(
            lambda session: pulls.pull_list(session, actor=self.app.actor), loaded, readonly=True
        )

    def take_scan(self, result: Scan) -> bool:
        accession = scanned_tube(result)
        if accession is None:
            return False
        if accession in self.pulled:
            self.app.notify(f"{accession} is pulled already", severity="warning")
            return True
        self.app.run_db(
            lambda session: pulls.pull(session, actor=self.app.actor, accession=accession),
            self.pulled_one,
        )
        return True

    def pulled_one(self, read: SpecimenRead) -> None:
        item = self.items.get(read.accession_id)
        if item is None:
            self.action_refresh()  # put on the list elsewhere since this screen loaded it
        else:
            self.pulled.add(item.accession_id)
            self.query_one(LineTable).set_cell(item.accession_id, DONE_COLUMN, _done(item))
            self.show_progress()
        self.app.notify(f"{read.accession_id} pulled: {read.status}")

    def show(self) -> None:
        """The whole list, as loaded (nothing pulled yet)."""
        self.query_one(LineTable).set_rows(
            {
                item.accession_id: [
                    plain(item.accession_id),
                    plain(item.box_barcode or "not placed"),
                    plain(item.position),
                    plain(item.disposition.value),
                    plain(item.participant_code),
                    Text("to pull"),
                ]
                for item in self.items.values()
            }
        )
        self.show_progress()

    def show_progress(self) -> None:
        """The counts, and the next tube to pull, its line marked."""
        self.query_one("#pull-title", Static).update(
            f"Pull list (consent withdrawals): {len(self.items) - len(self.pulled)} to pull, "
            f"{len(self.pulled)} pulled"
        )
        following = next(
            (i for i in self.items.values() if i.accession_id not in self.pulled), None
        )
        prompt = self.query_one("#pull-prompt", Static)
        if following is None:
            prompt.update("Nothing left to pull.")
        else:
            where = (
                f"{following.box_barcode} {following.position}" if following.box_barcode else "—"
            )
            prompt.update(
                plain(f"Next: {following.accession_id} at {where}. Scan each tube as it comes out.")
            )
        self.query_one(LineTable).mark(following and following.accession_id)


def _done(item: PullItem) -> Text:
    return Text(DONE[item.disposition.value], style="green")
