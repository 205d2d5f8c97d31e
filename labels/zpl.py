"""ZPL II for Zebra thermal printers at 203 or 300 dpi: one `^XA`...`^XZ` format per label.

The printer draws the QR code itself (`^BQ`, model 2, the magnification in dots a module, level
Q, mask 7, manual alphanumeric input: the same symbol as labels/qr.py) and sets text in its
font 0 (CG Triumvirate Bold Condensed). That font cannot be measured here, so lines are laid out
with a bound no narrower than it: Helvetica Bold's widths (the font 0 design is a condensed
Helvetica Bold), and at least 0.62 of the height a character, what font 0's widest digits and
signs are reported to take.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

from labels.errors import LabelError
from labels.fonts import helvetica_widths
from labels.layout import layout
from labels.model import Label
from labels.templates import LabelTemplate

DPIS = (203, 300)
FONT0_MIN_ADVANCE = 620
"""Thousandths of the height: no character is counted narrower."""
BAR_HEIGHT = 10
"""Firmware sets a `^FO`-placed QR code down by the current `^BY` bar height: it is pinned to
its power-on value and the field placed that much higher (never above the label's top edge)."""
_ESCAPED = {ord(c): f"_{ord(c):02X}" for c in "_^~"}


def render_zpl(labels: Iterable[Label], template: LabelTemplate, *, dpi: int) -> str:
    if dpi not in DPIS:
        raise LabelError(f"a Zebra printer here has {DPIS} dpi, not {dpi}", field="dpi", value=dpi)
    formats = [_format(label, template, dpi) for label in labels]
    if not formats:
        raise LabelError("no labels to print")
    return "".join(formats)


def _format(label: Label, template: LabelTemplate, dpi: int) -> str:
    placed = layout(label, template, _measure, dpi=dpi)
    fields = [
        f"^XA^CI28^PW{placed.width}^LL{placed.height}^LH0,0^BY2,3,{BAR_HEIGHT}",
        f"^FO{placed.qr_x},{max(placed.qr_y - BAR_HEIGHT, 0)}^BQN,2,{placed.module},Q,7"
        f"^FDQM,A{label.id}^FS",
    ]
    fields += [
        f"^FO{line.x},{line.top}^A0N,{line.size},{line.size}^FH^FD{line.text.translate(_ESCAPED)}^FS"
        for line in placed.lines
    ]
    fields.append("^XZ\n")
    return "".join(fields)


@cache
def _advances() -> Mapping[str, int]:
    return {c: max(w, FONT0_MIN_ADVANCE) for c, w in helvetica_widths(bold=True).items()}


def _measure(text: str, bold: bool, size: float) -> float:
    return sum(map(_advances().__getitem__, text)) * size / 1000
