"""A long table drawn a line at a time: only the lines on screen are drawn, and a changed row
redraws its own line.

Textual's DataTable recounts every row and redraws every cell on screen when one cell changes
(some 60 ms a change at 10,000 rows on the benchmark machine), and takes seconds to first show
10,000 rows: too slow for a list worked through scan by scan.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = Text("  ")
HEADER = Style(bold=True)
MARKED = Style(reverse=True)


class LineTable(ScrollView, can_focus=True):
    """Keyed rows of cells under a header that stays in place; one row may be marked (the
    one to act on next), and is kept in view. The arrow and page keys scroll."""

    DEFAULT_CSS = "LineTable { height: 1fr; }"

    def __init__(self, *labels: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.labels = [Text(label) for label in labels]
        self.rows: dict[str, list[Text]] = {}
        self.keys: list[str] = []  # in order
        self.index: dict[str, int] = {}
        self.widths = [label.cell_len for label in self.labels]
        self.marked: str | None = None

    def set_rows(self, rows: dict[str, list[Text]]) -> None:
        """Show these rows, in the order given, none marked."""
        self.rows, self.keys, self.marked = rows, list(rows), None
        self.index = {key: n for n, key in enumerate(self.keys)}
        self.widths = [
            max([label.cell_len, *(row[n].cell_len for row in rows.values())])
            for n, label in enumerate(self.labels)
        ]
        self._sized()

    def set_cell(self, key: str, column: int, value: Text) -> None:
        """Change one cell: its line alone is redrawn (all of them if the column widens)."""
        self.rows[key][column] = value
        if value.cell_len > self.widths[column]:
            self.widths[column] = value.cell_len
            self._sized()
        else:
            self.refresh_line(self.index[key] + 1)

    def mark(self, key: str | None) -> None:
        """Mark this row (None: none) and scroll it into view."""
        for changed in (self.marked, key):
            if changed is not None:
                self.refresh_line(self.index[changed] + 1)
        self.marked = key
        if key is None:
            return
        top, shown = round(self.scroll_y), max(1, self.size.height - 1)  # below the header
        row = self.index[key]
        if not top <= row < top + shown:
            self.scroll_to(y=row if row < top else row - shown + 1, animate=False)

    @property
    def row_count(self) -> int:
        return len(self.keys)

    def get_row_at(self, row: int) -> list[Text]:
        """The cells of the row at this index (as DataTable's)."""
        return self.rows[self.keys[row]]

    def _sized(self) -> None:
        width = sum(self.widths) + GAP.cell_len * (len(self.widths) - 1)
        self.virtual_size = Size(width, len(self.keys) + 1)  # the header's line, then the rows
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """Line 0 is the header; line y shows the row y - 1 below the top of the scroll."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            cells, style = self.labels, HEADER
        elif scroll_y + y - 1 < len(self.keys):
            key = self.keys[scroll_y + y - 1]
            cells, style = self.rows[key], MARKED if key == self.marked else None
        else:
            return Strip.blank(width, self.rich_style)
        padded = []
        for cell, cell_width in zip(cells, self.widths, strict=True):
            cell = cell.copy()
            cell.truncate(cell_width, pad=True)
            padded.append(cell)
        line = GAP.join(padded)
        line.pad_right(max(0, scroll_x + width - line.cell_len))  # marked to the edge
        segments = Segment.apply_style(line.render(self.app.console), self.rich_style, style)
        return Strip(segments, line.cell_len).crop(scroll_x, scroll_x + width)
