"""The print queue: what this workstation printed since it started, and where it went."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from tui.screens.base import WorkScreen


class PrintQueueScreen(WorkScreen):
    BINDINGS = [Binding("r", "refresh", "Refresh", id="refresh_print_queue")]  # noqa: RUF012

    def compose_body(self) -> ComposeResult:
        yield Static("Print queue: newest first", id="print-title", classes="title")
        table = DataTable(id="print-log", zebra_stripes=True, cursor_type="row")
        table.add_columns("time", "what", "sent to")
        yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_refresh()
        # A job sent just before this screen opened reports back while it is open.
        self.set_interval(1, self._catch_up)

    def _catch_up(self) -> None:
        if self.query_one(DataTable).row_count != len(self.app.print_log):
            self.action_refresh()

    def action_refresh(self) -> None:
        log = self.app.print_log
        self.query_one("#print-title", Static).update(
            f"Print queue: {len(log)} jobs since the workstation started, newest first"
        )
        table = self.query_one(DataTable)
        table.clear()
        for when, what, target in reversed(log):
            table.add_row(when, what, target)
