"""A box's grid: positions marked and coloured by status, free ones visible, an arrow-key
cursor.

Drawn as one block of text (not a widget per position), so a 10x10 or 8x12 box renders at
once and fits an 80x24 terminal.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from biobank.domain.vocabulary import SpecimenStatus as Status
from biobank.services.storage import BoxCell, BoxView

STATUS_STYLE = {
    Status.available: "bold green",
    Status.reserved: "bold yellow",
    Status.checked_out: "bold cyan",
    Status.quarantined: "bold magenta",
    Status.depleted: "dim",
}
# A mark before the tube's type, so its status reads without colour: a tube stored in place
# has none, one checked out an arrow out of the box.
STATUS_MARK = {
    Status.available: "",
    Status.checked_out: "↑",
    Status.reserved: "*",
    Status.quarantined: "!",
    Status.depleted: "∅",
}
STATUS_WORDS = {
    Status.available: "stored",
    Status.reserved: "reserved",
    Status.checked_out: "checked out",
    Status.quarantined: "quarantined",
    Status.depleted: "depleted",
}
FREE = "·"
CELL = 5  # a mark, a type of three letters, a space


def legend() -> Text:
    """What each mark (and colour) in the grid means, on one line."""
    text = Text(f"{FREE} free", style="dim")
    for status, mark in STATUS_MARK.items():
        text.append("  ")
        key = f"{mark} " if mark else "no mark: "
        text.append(key + STATUS_WORDS[status], style=STATUS_STYLE[status])
    return text


class BoxGrid(Widget, can_focus=True):
    BINDINGS = [  # noqa: RUF012
        Binding("up", "move(-1, 0)", "Up", show=False, id="grid_up"),
        Binding("down", "move(1, 0)", "Down", show=False, id="grid_down"),
        Binding("left", "move(0, -1)", "Left", show=False, id="grid_left"),
        Binding("right", "move(0, 1)", "Right", show=False, id="grid_right"),
        Binding("enter", "choose", "Open position", id="grid_choose"),
    ]

    cursor: reactive[tuple[int, int]] = reactive((1, 1))

    class Chosen(Message):
        def __init__(self, cell: BoxCell) -> None:
            super().__init__()
            self.cell = cell

    def __init__(self, view: BoxView, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view = view

    def update_view(self, view: BoxView) -> None:
        if view.unit.id != self.view.unit.id:
            self.cursor = (1, 1)  # another box: its first position
        self.view = view
        self.refresh(layout=True)

    @property
    def current(self) -> BoxCell:
        row, col = self.cursor
        return self.view.cells[(row - 1) * self.view.cols + (col - 1)]

    def action_move(self, rows: int, cols: int) -> None:
        row, col = self.cursor
        self.cursor = (
            min(max(1, row + rows), self.view.rows),
            min(max(1, col + cols), self.view.cols),
        )

    def action_choose(self) -> None:
        self.post_message(self.Chosen(self.current))

    def get_content_height(self, container, viewport, width) -> int:
        return self.view.rows + 2

    def get_content_width(self, container, viewport) -> int:
        return 3 + CELL * self.view.cols

    def render(self) -> Text:
        view = self.view
        numeric = view.cells[0].label.isdigit()
        text = Text("   " + "".join(f"{c:>{CELL - 1}} " for c in range(1, view.cols + 1)) + "\n")
        for r in range(view.rows):
            cells = view.cells[r * view.cols : (r + 1) * view.cols]
            row_name = "" if numeric else cells[0].label.rstrip("0123456789")
            text.append(f"{row_name:>2} ")
            for cell in cells:
                if cell.accession_id:
                    mark = STATUS_MARK.get(cell.status, "?") + (cell.specimen_type or "")
                    style = STATUS_STYLE.get(cell.status, "")
                else:
                    mark, style = FREE, "dim"
                if (cell.row, cell.col) == self.cursor:
                    style = f"{style} reverse" if style else "reverse"
                text.append(f"{mark:>{CELL - 1}} ", style=style)
            text.append("\n")
        free = sum(1 for c in view.cells if not c.accession_id)
        here = self.current
        what = (
            f"{here.accession_id} {here.specimen_type} {here.status}"
            if here.accession_id
            else "free"
        )
        text.append(f"{here.label}: {what}   ({free} free of {len(view.cells)})", style="italic")
        return text
