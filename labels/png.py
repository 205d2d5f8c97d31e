"""One label as a PNG at a printer's resolution, for previews and for printers that take images.

Text is set in the font Pillow ships (Aileron), measured at the exact pixel size it is drawn at,
so hinting cannot push a line past the label's edge.
"""

from __future__ import annotations

import io
from functools import cache

from labels import qr
from labels.layout import layout
from labels.model import Label
from labels.templates import LabelTemplate


def render_png(label: Label, template: LabelTemplate, *, dpi: int = 300) -> bytes:
    from PIL import Image, ImageDraw

    placed = layout(label, template, _measure, dpi=dpi)
    image = Image.new("L", (placed.width, placed.height), 255)
    draw = ImageDraw.Draw(image)
    module = placed.module
    for x, y, w, h in qr.rectangles(qr.matrix(label.id)):
        left, top = placed.qr_x + x * module, placed.qr_y + y * module
        draw.rectangle((left, top, left + w * module - 1, top + h * module - 1), fill=0)
    for line in placed.lines:
        draw.text((line.x, line.baseline), line.text, fill=0, font=_font(line.size), anchor="ls")
    out = io.BytesIO()
    image.save(out, format="PNG", dpi=(dpi, dpi))
    return out.getvalue()


@cache
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size)


def _measure(text: str, bold: bool, size: float) -> float:
    return _font(round(size)).getlength(text)
