"""Label rendering and printing: QR codes, PNG/SVG labels, PDF sheets, ZPL for Zebra printers.

Knows nothing of the database: callers build label data (`SpecimenLabel`, `KitLabel`,
`BoxLabel`) from read models and pick a template by name. Heavy libraries (fpdf2, Pillow,
qrcode) are imported only when something is rendered.
"""

from labels.errors import LabelError, PrinterError
from labels.model import BoxLabel, KitLabel, Label, SpecimenLabel
from labels.pdf import render_pdf
from labels.png import render_png
from labels.printers import print_labels, render, send
from labels.svg import render_svg
from labels.templates import TEMPLATES, LabelTemplate, template
from labels.zpl import render_zpl

__all__ = [
    "TEMPLATES",
    "BoxLabel",
    "KitLabel",
    "Label",
    "LabelError",
    "LabelTemplate",
    "PrinterError",
    "SpecimenLabel",
    "print_labels",
    "render",
    "render_pdf",
    "render_png",
    "render_svg",
    "render_zpl",
    "send",
    "template",
]
