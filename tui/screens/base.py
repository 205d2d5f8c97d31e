"""What every signed-in screen shares: the scan line at the top and the footer; and what the
form screens share: refusals shown at the field they name."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Header, Input, Static

from biobank.errors import BiobankError
from tui.text import plain
from tui.widgets.key_bar import KeyBar

if TYPE_CHECKING:
    from textual import getters

    from tui.app import BiobankApp


class ScanLine(Horizontal):
    """Where a typed ID goes (a scanner's burst is caught before any field sees it)."""

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Scan, or type an ID and press Enter", id="scan-box")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        event.input.value = ""
        if text:
            self.app.handle_scan(text)


class WorkScreen(Screen):
    """A signed-in screen. It opens other screens through the app (`open_specimen`,
    `open_withdrawal`, ...), never by importing them: the app alone knows which opens what."""

    if TYPE_CHECKING:
        app = getters.app(BiobankApp)  # the app's own methods, for the type checker

    # Nothing takes focus by itself, so single keys act at once; "/" focuses the scan box.
    AUTO_FOCUS = ""
    BINDINGS = [  # noqa: RUF012
        Binding("escape", "back", "Back", id="back"),
        Binding("slash", "focus_scan", "Type an ID", id="focus_scan"),
    ]

    def compose_body(self) -> ComposeResult:
        yield from ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield ScanLine(id="scan-line")
        yield from self.compose_body()
        yield KeyBar()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def action_focus_scan(self) -> None:
        self.query_one("#scan-box", Input).focus()


class FormErrors:
    """For a screen whose form has a `#<field>-error` line under each of its FIELDS: a
    service error names its own field, and SHOWN_AT says which form field holds that value."""

    FIELDS: ClassVar[tuple[str, ...]] = ()
    SHOWN_AT: ClassVar[dict[str, str]] = {}

    def refuse(self, error: BiobankError) -> None:
        """A refusal found here: at its field, and as the app shows every error."""
        self.show_at_field(error)
        self.app.show_error(error)

    def show_at_field(self, error: BiobankError) -> None:
        field = self.SHOWN_AT.get(error.field, error.field)
        if field in self.FIELDS:
            self.query_one(f"#{field}-error", Static).update(plain(error.message))

    def clear_errors(self) -> None:
        for field in self.FIELDS:
            self.query_one(f"#{field}-error", Static).update("")
