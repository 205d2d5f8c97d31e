"""A box: its grid, and the tube under the cursor opens with Enter."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from biobank.services.storage import BoxView, box_view
from tui.screens.base import WorkScreen
from tui.widgets.box_grid import BoxGrid


class BoxScreen(WorkScreen):
    BINDINGS = [  # noqa: RUF012
        Binding("r", "refresh", "Refresh", id="refresh_box"),
        Binding("p", "print_label", "Print box label", id="print_box_label"),
    ]

    def __init__(self, barcode: str) -> None:
        super().__init__()
        self.barcode = barcode

    def compose_body(self) -> ComposeResult:
        yield Static(self.barcode, id="box-title", classes="title", markup=False)
        yield Static("Loading…", id="box-loading", classes="muted")

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.app.run_db(
            lambda session: box_view(session, actor=self.app.actor, barcode=self.barcode),
            self.show,
            readonly=True,
        )

    def show(self, view: BoxView) -> None:
        self.query_one("#box-title", Static).update(f"{view.unit.path}  [{view.unit.barcode}]")
        grids = self.query(BoxGrid)
        if grids:
            grids.first().update_view(view)
            return
        self.query_one("#box-loading").remove()
        grid = BoxGrid(view, id="grid")
        self.mount(grid, after=self.query_one("#box-title"))
        grid.focus()

    def on_box_grid_chosen(self, message: BoxGrid.Chosen) -> None:
        from tui.screens.specimen import SpecimenScreen

        if message.cell.accession_id:
            self.app.push_screen(SpecimenScreen(message.cell.accession_id))

    def action_print_label(self) -> None:
        from tui.printing import print_box_label

        print_box_label(self.app, self.barcode)
