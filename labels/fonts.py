"""Glyph widths, for laying out text before it is drawn.

The PDF uses the Helvetica core font (fpdf2 ships Adobe's metrics for all of Latin-1), and the
ZPL bound is derived from Helvetica Bold. An SVG names monospace fonts instead: a viewer uses
whatever fonts it has, and some ignore `textLength`, but monospace advances are 0.6 em nearly
everywhere (DejaVu Sans Mono and Menlo 0.602, Courier and Liberation Mono 0.6, Consolas 0.55).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache


@cache
def helvetica_widths(bold: bool) -> Mapping[str, int]:
    """Advance of each Latin-1 character in thousandths of the font size."""
    from fpdf.fonts import CORE_FONTS_CHARWIDTHS

    return CORE_FONTS_CHARWIDTHS["helveticaB" if bold else "helvetica"]


def helvetica(text: str, bold: bool, size: float) -> float:
    """Width of `text` (printable Latin-1) set in Helvetica at `size`, in the units of `size`."""
    return sum(map(helvetica_widths(bold).__getitem__, text)) * size / 1000


MONOSPACE_ADVANCE = 0.61
"""Of the font size: at least the advance of every common monospace font."""


def monospace(text: str, bold: bool, size: float) -> float:
    return len(text) * MONOSPACE_ADVANCE * size
