"""Every key binding of the app and of the screen underneath, with its id."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import DataTable


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,f1", "dismiss", "Close", id="close_help")]  # noqa: RUF012
    DEFAULT_CSS = "HelpScreen { align: center middle; } HelpScreen DataTable { width: 80%; }"

    def compose(self) -> ComposeResult:
        table = DataTable(zebra_stripes=True)
        table.add_columns("key", "action", "id", "where")
        under = self.app.screen_stack[-2] if len(self.app.screen_stack) > 1 else None
        for where, node in (("everywhere", self.app), ("this screen", under)):
            for binding in getattr(node, "BINDINGS", []):
                if isinstance(binding, Binding):
                    table.add_row(binding.key, binding.description, binding.id or "", where)
        scan_help = getattr(under, "SCAN_HELP", None)  # a screen that takes scans itself
        table.add_row(
            "(scan)",
            scan_help or "open what was scanned",
            "",
            "this screen" if scan_help else "everywhere",
        )
        yield table
