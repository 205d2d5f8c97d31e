"""The keys the screen answers to, on the bottom line."""

from __future__ import annotations

from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

KEY_STYLE = "bold $footer-key-foreground"


class KeyBar(Static):
    """What Textual's Footer shows, drawn as one line of text.

    The Footer makes a widget per key; laying those out and styling them took more than half
    the time a scanned tube took to show. A workstation driven by keyboard and scanner needs
    the keys and their words, not buttons (the command palette, Ctrl+P, lists them all too).
    """

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-description-foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self) -> None:
        super().__init__("", markup=False)

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen:
            self.update(self.keys())

    def keys(self) -> Content:
        """Each shown binding once per action: its key, then what it does (dimmed when the
        screen cannot do it now)."""
        parts: list[Content] = []
        shown: set[str] = set()
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in shown:
                continue
            shown.add(binding.action)
            key = f" {self.app.get_key_display(binding)} "
            part = Content.styled(key, KEY_STYLE) + Content(f"{binding.description} ")
            parts.append(part if enabled else part.stylize("dim"))
        return Content("").join(parts)
