"""Where the QR code and each line of text go on one label, computed before anything is drawn so
that nothing is clipped: text shrinks, then wraps, and a label that cannot fit is refused.

The symbol keeps its quiet zone inside the label and takes the label's height (at most about half
its width); the lines sit to its right, the ID first and bold. Lengths are millimetres for vector
outputs, or whole dots at a printer's dpi so modules and text land on the printhead's grid.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from labels import qr
from labels.errors import LabelError
from labels.model import Label
from labels.templates import INCH, LabelTemplate

Measure = Callable[[str, bool, float], float]
"""Width of a text (bold or not) at a font size, in the layout's units."""

MARGIN_MM = 0.5
"""Between text and the label's edge (the symbol's quiet zone is its own margin)."""
MIN_MODULE_MM, MAX_MODULE_MM = 0.25, 0.8
MAX_QR_SHARE = 0.55
"""Of the label's width, quiet zone included."""
MIN_TEXT_MM, MAX_TEXT_MM = 1.2, 3.5
"""Font sizes (em): about 3.4 to 10 pt."""
VECTOR_STEP_MM = 0.05
LEADING = 1.2
"""Line pitch, in font sizes."""
ASCENT = 0.95
"""From the top of a line to its baseline, in font sizes: room for accented capitals above and
descenders below."""

_TYPOGRAPHIC = str.maketrans(
    {
        "\u2212": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
    }
)


@dataclass(frozen=True)
class Line:
    text: str
    x: float
    top: float
    size: float
    bold: bool

    @property
    def baseline(self) -> float:
        return self.top + ASCENT * self.size


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    modules: int
    """Per side of the symbol, quiet zone excluded."""
    module: float
    qr_x: float
    qr_y: float
    lines: tuple[Line, ...]


def printable(text: str) -> str:
    """`text` on one line in Latin-1, which every output's font has: typographic dashes and
    quotes become ASCII, anything else outside Latin-1 becomes '?'."""
    text = " ".join(unicodedata.normalize("NFC", text).translate(_TYPOGRAPHIC).split())
    return "".join(c if " " <= c <= "~" or "\xa0" <= c <= "\xff" else "?" for c in text)


def layout(
    label: Label, template: LabelTemplate, measure: Measure, *, dpi: int | None = None
) -> Layout:
    """Place `label` on one label of `template`: in millimetres, or in dots at `dpi`."""
    scale = 1.0 if dpi is None else dpi / INCH
    snap = _exact if dpi is None else math.floor
    width, height = snap(template.width * scale), snap(template.height * scale)
    modules = qr.size(label.id)
    module = snap(min(height, width * MAX_QR_SHARE) / (modules + 2 * qr.QUIET_ZONE))
    module = min(module, snap(MAX_MODULE_MM * scale))
    if module < MIN_MODULE_MM * scale:
        raise LabelError(
            f"{label.id} needs a QR code of {modules}x{modules} modules, too fine for "
            f"{template.name}: under {MIN_MODULE_MM} mm a module",
            field="id",
            value=label.id,
        )
    qr_x = qr.QUIET_ZONE * module
    qr_y = snap((height - modules * module) / 2)
    margin = snap(MARGIN_MM * scale)
    left = qr_x + (modules + qr.QUIET_ZONE) * module
    area_width, area_height = width - margin - left, height - 2 * margin
    texts = [(label.id, True), *((printable(line), False) for line in label.lines)]
    size, rows = _fit(texts, area_width, area_height, measure, _sizes(dpi))
    if size is None:
        raise LabelError(
            f"the text of {label.id} does not fit {template.name}, even at {MIN_TEXT_MM} mm",
            field="id",
            value=label.id,
        )
    pitch = size * LEADING
    top = margin + (area_height - len(rows) * pitch) / 2
    lines = tuple(
        Line(text, left, snap(top + n * pitch), size, bold) for n, (text, bold) in enumerate(rows)
    )
    return Layout(width, height, modules, module, qr_x, qr_y, lines)


def _exact(value: float) -> float:
    return value


@cache
def _sizes(dpi: int | None) -> tuple[float, ...]:
    """Font sizes to try, largest first: whole dots on a printer, fine steps in vector."""
    if dpi is not None:
        scale = dpi / INCH
        return tuple(range(math.floor(MAX_TEXT_MM * scale), math.ceil(MIN_TEXT_MM * scale) - 1, -1))
    steps = round((MAX_TEXT_MM - MIN_TEXT_MM) / VECTOR_STEP_MM)
    return tuple(MAX_TEXT_MM - n * VECTOR_STEP_MM for n in range(steps + 1))


def _fit(
    texts: list[tuple[str, bool]],
    area_width: float,
    area_height: float,
    measure: Measure,
    sizes: Sequence[float],
) -> tuple[float | None, list[tuple[str, bool]]]:
    """The largest size at which every line fits the area, and the lines wrapped at it.

    The ID stays on one line while any size allows it (a broken ID misleads the eye); only then
    does it wrap too. Other lines wrap at spaces, and a word too long for a line is broken.
    """
    code = texts[0][0]
    estimate = area_width * 100 / measure(code, True, 100)  # where the ID alone first fits
    # (within 2 %: hinted raster fonts do not scale quite linearly)
    for id_wraps in (False, True):
        for size in sizes:
            if not id_wraps and (size > estimate * 1.02 or measure(code, True, size) > area_width):
                continue
            if len(texts) * size * LEADING > area_height:
                continue
            rows = []
            for text, bold in texts:
                pieces = _wrap(text, bold, size, area_width, measure)
                if pieces is None:
                    break
                rows += [(piece, bold) for piece in pieces]
            else:
                if len(rows) * size * LEADING <= area_height:
                    return size, rows
    return None, []


def _wrap(text: str, bold: bool, size: float, width: float, measure: Measure) -> list[str] | None:
    """`text` in lines no wider than `width`, or None if a single character is wider."""
    if measure(text, bold, size) <= width:
        return [text]
    rows: list[str] = []
    current = ""
    for word in text.split(" "):
        joined = f"{current} {word}" if current else word
        if measure(joined, bold, size) <= width:
            current = joined
            continue
        if current:
            rows.append(current)
        while measure(word, bold, size) > width:
            fits = 0
            while measure(word[: fits + 1], bold, size) <= width:
                fits += 1
            if fits == 0:
                return None
            rows.append(word[:fits])
            word = word[fits:]
        current = word
    rows.append(current)
    return rows
