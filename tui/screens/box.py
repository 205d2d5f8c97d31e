"""A box: its grid, what its marks mean, and the tube under the cursor opens with Enter."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from biobank.services.storage import BoxView, box_view
from tui.screens.base import WorkScreen
from tui.text import plain
from tui.widgets.box_grid import BoxGrid, legend


class BoxScreen(WorkScreen):
    BINDINGS = [  # noqa: RUF012
        Binding("r", "refresh", "Refresh", id="refresh_box"),
        Binding("p", "print_label", "Print box label", id="print_box_label"),
    ]

    def __init__(self, barcode: str, view: BoxView | None = None) -> None:
        """`view`: the box as read with its scan (else it is loaded once mounted)."""
        super().__init__()
        self.barcode = barcode
        self._loaded = view

    def compose_body(self) -> ComposeResult:
        view = self._loaded
        if view is None:
            yield Static(self.barcode, id="box-title", classes="title", markup=False)
            yield Static("Loading…", id="box-loading", classes="muted")
        else:
            yield Static(_title(view), id="box-title", classes="title", markup=False)
            yield BoxGrid(view, id="grid")
        yield Static(legend(), id="box-legend", classes="legend")

    def on_mount(self) -> None:
        if self._loaded is None:
            self.action_refresh()
        else:
            self.query_one(BoxGrid).focus()
            self._loaded = None

    def open(self, barcode: str, view: BoxView) -> None:
        """Show another box in this screen (a box scanned, this screen kept from the last)."""
        self.barcode = barcode
        self.show(view)

    def action_refresh(self) -> None:
        self.app.run_db(
            lambda session: box_view(session, actor=self.app.actor, barcode=self.barcode),
            self.show,
            readonly=True,
        )

    def show(self, view: BoxView) -> None:
        if view.unit.barcode != self.barcode:
            return  # a late answer for the box this screen showed before the last scan
        self.query_one("#box-title", Static).update(_title(view))
        grids = self.query(BoxGrid)
        if grids:
            grids.first().update_view(view)
            return
        self.query_one("#box-loading").remove()
        grid = BoxGrid(view, id="grid")
        self.mount(grid, after=self.query_one("#box-title"))
        grid.focus()

    def on_box_grid_chosen(self, message: BoxGrid.Chosen) -> None:
        if message.cell.accession_id:
            self.app.open_specimen(message.cell.accession_id)

    def action_print_label(self) -> None:
        from tui.printing import print_box_label

        print_box_label(self.app, self.barcode)


def _title(view: BoxView) -> Text:
    return plain(f"{view.unit.path}  [{view.unit.barcode}]")
