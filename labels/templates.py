"""Label stock: the size of one label and how labels sit on a page. Lengths in millimetres.

A roll template (the default) prints one label per page, the page the size of the label: what a
thermal printer's driver takes. A sheet template places `rows` x `cols` labels on a letter or
A4 page from its top-left margins, `col_gap`/`row_gap` apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from labels.errors import LabelError

INCH = 25.4


@dataclass(frozen=True)
class LabelTemplate:
    name: str
    width: float
    height: float
    page: tuple[float, float] | None = None
    rows: int = 1
    cols: int = 1
    left: float = 0.0
    top: float = 0.0
    col_gap: float = 0.0
    row_gap: float = 0.0

    def __post_init__(self) -> None:
        page_width, page_height = self.page_size
        used_width = self.left + self.cols * self.width + (self.cols - 1) * self.col_gap
        used_height = self.top + self.rows * self.height + (self.rows - 1) * self.row_gap
        if used_width > page_width + 1e-6 or used_height > page_height + 1e-6:
            raise ValueError(f"template {self.name}: the labels overrun the page")

    @property
    def page_size(self) -> tuple[float, float]:
        return self.page or (self.width, self.height)

    @property
    def per_page(self) -> int:
        return self.rows * self.cols

    def origin(self, slot: int) -> tuple[float, float]:
        """Top-left corner of the label in `slot` (0-based, across then down) of a page."""
        row, col = divmod(slot, self.cols)
        return (
            self.left + col * (self.width + self.col_gap),
            self.top + row * (self.height + self.row_gap),
        )


LETTER = (8.5 * INCH, 11 * INCH)
A4 = (210.0, 297.0)

TEMPLATES = {
    t.name: t
    for t in (
        # 2 mL cryovials, thermal-transfer rolls: the plain label and a wrap-around one.
        LabelTemplate("cryo-1.05x0.5in", 1.05 * INCH, 0.5 * INCH),
        LabelTemplate("cryo-wrap-1.28x0.5in", 1.28 * INCH, 0.5 * INCH),
        # Box fronts and lids, thermal roll.
        LabelTemplate("box-2x1in", 2 * INCH, 1 * INCH),
        # Laser sheets: 80 labels of 1.75 x 0.5 in on letter (the Avery 5167 layout) and
        # 65 labels of 38.1 x 21.2 mm on A4.
        LabelTemplate(
            "letter-4x20",
            1.75 * INCH,
            0.5 * INCH,
            page=LETTER,
            rows=20,
            cols=4,
            left=0.3 * INCH,
            top=0.5 * INCH,
            col_gap=0.3 * INCH,
        ),
        LabelTemplate(
            "a4-5x13", 38.1, 21.2, page=A4, rows=13, cols=5, left=4.65, top=10.7, col_gap=2.5
        ),
    )
}


def template(name: str) -> LabelTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise LabelError(
            f"unknown label template {name!r}; known: {', '.join(TEMPLATES)}",
            field="label",
            value=name,
        ) from None
