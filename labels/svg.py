"""One label as SVG, in millimetres: the symbol as one path of rectangles, text in a monospace
font laid out at a bound on every such font's width (labels/fonts.py), and pinned to that width
with `textLength` where the viewer honours it."""

from __future__ import annotations

from xml.sax.saxutils import escape

from labels import qr
from labels.fonts import monospace
from labels.layout import Line, layout
from labels.model import Label
from labels.templates import LabelTemplate

FONTS = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', 'Courier New', monospace"


def render_svg(label: Label, template: LabelTemplate) -> str:
    placed = layout(label, template, monospace)
    width, height, module = placed.width, placed.height, placed.module
    path = "".join(
        f"M{_n(placed.qr_x + x * module)} {_n(placed.qr_y + y * module)}"
        f"h{_n(w * module)}v{_n(h * module)}h{_n(-w * module)}z"
        for x, y, w, h in qr.rectangles(qr.matrix(label.id))
    )
    texts = "".join(map(_text, placed.lines))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}mm" height="{_n(height)}mm"'
        f' viewBox="0 0 {_n(width)} {_n(height)}">'
        f"<title>{escape(label.id)}</title>"
        f'<rect width="{_n(width)}" height="{_n(height)}" fill="#fff"/>'
        f'<path d="{path}" fill="#000" shape-rendering="crispEdges"/>'
        f'<g font-family="{FONTS}" fill="#000">{texts}</g>'
        "</svg>\n"
    )


def _text(line: Line) -> str:
    weight = ' font-weight="bold"' if line.bold else ""
    return (
        f'<text x="{_n(line.x)}" y="{_n(line.baseline)}" font-size="{_n(line.size)}"{weight}'
        f' textLength="{_n(monospace(line.text, line.bold, line.size))}"'
        f' lengthAdjust="spacingAndGlyphs">{escape(line.text)}</text>'
    )


def _n(value: float) -> str:
    """A length with at most four decimals, without trailing zeros."""
    return f"{value:.4f}".rstrip("0").rstrip(".")
