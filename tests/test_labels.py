"""Labels: every QR code we draw decodes, with a real decoder, to the exact ID; the quiet zone
and the label's edges stay clear (nothing clipped) on every template at every resolution; ZPL
is one well-formed format per label; and `labels` never loads the database or the TUI."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pypdfium2
import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from biobank.domain.identifiers import MAX_SERIAL, format_specimen_id
from biobank.settings import PrinterProfile
from labels import (
    TEMPLATES,
    BoxLabel,
    KitLabel,
    LabelError,
    LabelTemplate,
    SpecimenLabel,
    qr,
    render_pdf,
    render_png,
    render_svg,
    render_zpl,
    template,
)
from labels.fonts import helvetica_widths
from labels.layout import MARGIN_MM, printable

ROOT = Path(__file__).resolve().parent.parent
DPIS = (203, 300)
CLEAR_EDGE_MM = 0.4
"""No ink this close to a label's edge: text keeps 0.5 mm, the symbol its quiet zone."""


def _widest_specimen_id() -> str:
    """The longest ID the format allows, in the widest capitals of every font we use."""
    return next(i for n in range(MAX_SERIAL, 0, -1) if (i := format_specimen_id("WWWWWW", n)))


WIDEST = _widest_specimen_id()
LABELS = {
    "specimen": SpecimenLabel(WIDEST, "SER", date(2025, 3, 1), participant="SLE-7KQ3MX"),
    "typical": SpecimenLabel("SLE-0000001M", "PL1", date(2025, 3, 1)),
    "kit": KitLabel(WIDEST, "month 12 follow-up", "PL1", participant="SLE-7KQ3MX"),
    "box": BoxLabel("BX000123", "Box 12 of PL1 aliquots", "Main > -80 #3 > Shelf 2 > Rack 4"),
}
LONG_BOX = BoxLabel("W" * qr.MAX_LENGTH, "Box 12 of PL1 aliquots", "Main > -80 #3 > Shelf 2")
"""The longest box barcode: it fits every template but the smallest cryo label."""
ROOMY = [name for name in TEMPLATES if name != "cryo-1.05x0.5in"]
TOO_LONG = BoxLabel(
    "W" * qr.MAX_LENGTH,
    "Box 12 of PL1 aliquots for the flare sub-study",
    "Main site > Freezer -80 #3 > Shelf 2 > Rack 4 > Column 3",
)


def _cases():
    for name in TEMPLATES:
        for kind, label in LABELS.items():
            yield pytest.param(name, label, id=f"{name}-{kind}")
    for name in ROOMY:
        yield pytest.param(name, LONG_BOX, id=f"{name}-long-box")


CASES = list(_cases())


# --- what the decoder and the pixels say ----------------------------------------------------


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("L")


def _check(image: Image.Image, label, *, dots_per_mm: float) -> None:
    """One QR code, decoding to exactly the label's ID at level Q with mask 7; its quiet zone
    light; no ink along the edges; and some text beside the symbol."""
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert [b.text for b in found] == [label.id]
    assert found[0].extra["ECLevel"] == "Q" and found[0].extra["DataMask"] == 7
    corners = found[0].position
    xs = [p.x for p in (corners.top_left, corners.top_right, corners.bottom_left)]
    ys = [p.y for p in (corners.top_left, corners.top_right, corners.bottom_left)]
    left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
    quiet = round(4 * (right - left) / qr.size(label.id) - 1.5)  # corners are within a pixel
    zone = (left - quiet, top - quiet, right + quiet, bottom + quiet)
    assert zone[0] >= 0 and zone[1] >= 0, "the quiet zone runs off the label"
    assert zone[2] <= image.width and zone[3] <= image.height, "the quiet zone runs off the label"
    ring = image.crop(zone)
    ring.paste(255, (quiet - 2, quiet - 2, ring.width - quiet + 2, ring.height - quiet + 2))
    assert ring.getextrema()[0] > 127, "ink in the quiet zone"
    edge = max(1, math.floor(CLEAR_EDGE_MM * dots_per_mm))
    border = image.copy()
    border.paste(255, (edge, edge, image.width - edge, image.height - edge))
    assert border.getextrema()[0] > 127, "ink at the label's edge: something was clipped"
    beside = image.crop((zone[2], 0, image.width, image.height))
    assert beside.getextrema()[0] < 128, "no text beside the symbol"


# --- label data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", ["", "sle-0000001m", "BX_12", "SLE-0000001M\n", "A" * (qr.MAX_LENGTH + 1)]
)
def test_a_code_outside_qr_alphanumeric_mode_is_refused_by_name(code):
    with pytest.raises(LabelError) as raised:
        SpecimenLabel(code, "SER")
    assert raised.value.field == "id" and raised.value.value == code


def test_a_specimen_label_shows_the_pseudonym_only_when_given():
    shown = SpecimenLabel("SLE-0000001M", "SER", date(2025, 3, 1), participant="SLE-7KQ3MX")
    hidden = SpecimenLabel("SLE-0000001M", "SER", date(2025, 3, 1))
    assert shown.lines == ("SER 2025-03-01", "SLE-7KQ3MX")
    assert hidden.lines == ("SER 2025-03-01",)


def test_kit_and_box_labels_say_what_they_are():
    assert KitLabel("SLE-0000001M", "baseline", "SER").lines == ("SER baseline", "KIT")
    box = BoxLabel("BX000123", "Box 3", "Main > -80 #3 > Shelf 1 > Rack 2")
    assert box.lines == ("Box 3", "Main > -80 #3 > Shelf 1 > Rack 2")


def test_text_is_reduced_to_latin_1_on_one_line():
    assert printable("−80 °C\tshelf “2”…\nrack") == '-80 °C shelf "2"... rack'
    assert printable("Box 漢") == "Box ?"


# --- the symbol -----------------------------------------------------------------------------


def test_every_specimen_id_is_a_version_1_symbol():
    assert qr.size(WIDEST) == 21
    assert len(qr.matrix(WIDEST)) == 21


@pytest.mark.parametrize("length", [1, 16, 17, 29, 30, 47, 48, qr.MAX_LENGTH])
def test_the_size_predicted_from_the_length_is_the_symbol_made(length):
    code = ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-" * 2)[:length]
    assert len(qr.matrix(code)) == qr.size(code)


def test_rectangles_cover_exactly_the_dark_modules_once():
    symbol = qr.matrix(WIDEST)
    painted = [[0] * len(symbol) for _ in symbol]
    for x, y, w, h in qr.rectangles(symbol):
        for row in range(y, y + h):
            for col in range(x, x + w):
                painted[row][col] += 1
    assert painted == [[int(dark) for dark in row] for row in symbol]
    assert len(qr.rectangles(symbol)) < sum(map(sum, painted)) / 2


# --- templates ------------------------------------------------------------------------------


def test_the_settings_default_label_is_a_template():
    assert template(PrinterProfile().label).name == "cryo-1.05x0.5in"


def test_an_unknown_template_names_the_known_ones():
    with pytest.raises(LabelError, match=r"cryo-1\.05x0\.5in") as raised:
        template("avery-9999")
    assert raised.value.field == "label"


def test_a_sheet_places_labels_across_then_down():
    sheet = template("letter-4x20")
    assert sheet.per_page == 80
    assert sheet.origin(0) == (0.3 * 25.4, 0.5 * 25.4)
    assert sheet.origin(5) == pytest.approx((0.3 * 25.4 + 2.05 * 25.4, 0.5 * 25.4 + 0.5 * 25.4))
    last_x, last_y = sheet.origin(79)
    assert (
        last_x + sheet.width <= sheet.page_size[0] and last_y + sheet.height <= sheet.page_size[1]
    )


def test_a_template_whose_labels_overrun_the_page_is_refused():
    with pytest.raises(ValueError, match="overrun"):
        LabelTemplate("bad", 60, 20, page=(210, 297), rows=15, cols=3)


# --- PNG, SVG, PDF: decode and fit ------------------------------------------------------------


@pytest.mark.parametrize("dpi", DPIS)
@pytest.mark.parametrize(("name", "label"), CASES)
def test_png_labels_decode_and_fit(name, label, dpi):
    image = _image(render_png(label, template(name), dpi=dpi))
    stock = template(name)
    assert image.size == (
        math.floor(stock.width * dpi / 25.4),
        math.floor(stock.height * dpi / 25.4),
    )
    _check(image, label, dots_per_mm=dpi / 25.4)


@pytest.mark.parametrize(("name", "label"), CASES)
def test_svg_labels_decode_and_fit(name, label):
    import cairosvg

    dpi = 600
    image = _image(cairosvg.svg2png(bytestring=render_svg(label, template(name)).encode(), dpi=dpi))
    _check(image, label, dots_per_mm=dpi / 25.4)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_pdf_pages_hold_every_label_in_place(name):
    stock = template(name)
    kinds = [*LABELS.values(), *([LONG_BOX] if name in ROOMY else [])]
    batch = [kinds[n % len(kinds)] for n in range(stock.per_page + 3)]
    pages = _pages(render_pdf(batch, stock))
    assert len(pages) == math.ceil(len(batch) / stock.per_page)
    for n, label in enumerate(batch):
        page, place = divmod(n, stock.per_page)
        _check(_cell(pages[page], stock, place), label, dots_per_mm=PDF_DPMM)
    if stock.per_page > 3:
        assert _cell(pages[-1], stock, 3).getextrema()[0] > 127, "a label past the last"


def test_pdf_skip_starts_on_a_partly_used_sheet():
    stock = template("a4-5x13")
    pages = _pages(render_pdf(LABELS.values(), stock, skip=63))
    assert len(pages) == 2
    assert _cell(pages[0], stock, 62).getextrema()[0] > 127
    _check(_cell(pages[0], stock, 63), LABELS["specimen"], dots_per_mm=PDF_DPMM)
    _check(_cell(pages[0], stock, 64), LABELS["typical"], dots_per_mm=PDF_DPMM)
    _check(_cell(pages[1], stock, 0), LABELS["kit"], dots_per_mm=PDF_DPMM)
    _check(_cell(pages[1], stock, 1), LABELS["box"], dots_per_mm=PDF_DPMM)


def test_a_pdf_of_no_labels_is_refused():
    with pytest.raises(LabelError, match="no labels"):
        render_pdf([], template("letter-4x20"))


PDF_DPMM = 16  # 406 dpi: modules of 0.25 mm get 4 pixels


def _pages(pdf: bytes) -> list[Image.Image]:
    document = pypdfium2.PdfDocument(pdf)
    return [page.render(scale=PDF_DPMM * 25.4 / 72).to_pil().convert("L") for page in document]


def _cell(page: Image.Image, stock: LabelTemplate, place: int) -> Image.Image:
    x, y = stock.origin(place)
    return page.crop(tuple(round(v * PDF_DPMM) for v in (x, y, x + stock.width, y + stock.height)))


@settings(max_examples=30, deadline=None)
@given(
    st.builds(
        format_specimen_id,
        st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True),
        st.integers(0, MAX_SERIAL),
    ).filter(bool)
)
def test_any_specimen_id_decodes_from_the_smallest_label_at_203_dpi(code):
    label = SpecimenLabel(code, "SER", date(2025, 3, 1), participant="SLE-7KQ3MX")
    _check(_image(render_png(label, template("cryo-1.05x0.5in"), dpi=203)), label, dots_per_mm=8)


@pytest.mark.parametrize(
    "render",
    [
        lambda label, stock: render_png(label, stock, dpi=203),
        lambda label, stock: render_svg(label, stock),
        lambda label, stock: render_pdf([label], stock),
        lambda label, stock: render_zpl([label], stock, dpi=300),
    ],
    ids=["png", "svg", "pdf", "zpl"],
)
def test_a_label_that_cannot_fit_is_refused_not_clipped(render):
    with pytest.raises(LabelError, match=r"does not fit cryo-1\.05x0\.5in") as raised:
        render(TOO_LONG, template("cryo-1.05x0.5in"))
    assert raised.value.value == TOO_LONG.id


def test_a_short_id_keeps_one_line_and_a_long_path_wraps():
    box = BoxLabel("BX000123", "Box 3", "Main site > Freezer -80 #3 > Shelf 2 > Rack 4")
    zpl = render_zpl([box], template("cryo-1.05x0.5in"), dpi=203)
    texts = re.findall(r"\^FD([^^]*)\^FS", zpl)[1:]
    assert texts[0] == "BX000123"
    assert len(texts) > 3 and " ".join(texts[2:]) == box.path


# --- ZPL ----------------------------------------------------------------------------------

FORMAT = re.compile(
    r"\^XA\^CI28\^PW(?P<width>\d+)\^LL(?P<height>\d+)\^LH0,0\^BY2,3,10"
    r"\^FO(?P<qx>\d+),(?P<qy>\d+)\^BQN,2,(?P<module>\d+),Q,7\^FDQM,A(?P<id>[0-9A-Z $%*+\-./:]+)\^FS"
    r"(?P<texts>(?:\^FO\d+,\d+\^A0N,\d+,\d+\^FH\^FD[^^~]*\^FS)+)"
    r"\^XZ\n"
)
TEXT = re.compile(r"\^FO(?P<x>\d+),(?P<y>\d+)\^A0N,(?P<h>\d+),(?P=h)\^FH\^FD(?P<text>[^^~]*)\^FS")


def zpl_formats(zpl: str) -> list[re.Match]:
    """Each label's format, checked whole: nothing may sit between or after them."""
    formats = list(FORMAT.finditer(zpl))
    assert "".join(f.group(0) for f in formats) == zpl
    return formats


def _font0_width(text: str, height: int) -> float:
    """At least Helvetica Bold's width and never under 0.62 of the height a character."""
    bold = helvetica_widths(bold=True)
    raw = re.sub(r"_([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), text)
    return sum(max(bold[c], 620) for c in raw) * height / 1000


@pytest.mark.parametrize("dpi", DPIS)
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_zpl_fields_stay_inside_the_label_and_clear_of_the_quiet_zone(name, dpi):
    stock = template(name)
    labels = [*LABELS.values(), *([LONG_BOX] if name in ROOMY else [])]
    formats = zpl_formats(render_zpl(labels, stock, dpi=dpi))
    assert [f["id"] for f in formats] == [label.id for label in labels]
    margin = math.floor(MARGIN_MM * dpi / 25.4)
    for f, label in zip(formats, labels, strict=True):
        width, height = int(f["width"]), int(f["height"])
        assert width == math.floor(stock.width * dpi / 25.4)
        assert height == math.floor(stock.height * dpi / 25.4)
        module, side = int(f["module"]), qr.size(label.id) * int(f["module"])
        qx, qy = int(f["qx"]), int(f["qy"]) + 10  # ^BY's bar height moves the symbol down
        assert 1 <= module <= 10
        assert qx >= 4 * module and qy >= 4 * module and qy + side + 4 * module <= height
        texts = list(TEXT.finditer(f["texts"]))
        assert label.id.startswith(texts[0]["text"])
        for t in texts:
            x, y, h = int(t["x"]), int(t["y"]), int(t["h"])
            assert x >= qx + side + 4 * module
            assert x + _font0_width(t["text"], h) <= width - margin
            assert margin <= y and y + 1.2 * h <= height - margin


def test_zpl_escapes_what_the_printer_would_read_as_commands():
    box = BoxLabel("BX000123", "Box ^XZ ~JA", "rack_2 °C")
    (f,) = zpl_formats(render_zpl([box], template("box-2x1in"), dpi=203))
    texts = [t["text"] for t in TEXT.finditer(f["texts"])]
    assert texts == ["BX000123", "Box _5EXZ _7EJA", "rack_5F2 °C"]


def test_zpl_is_made_for_203_or_300_dpi_only():
    with pytest.raises(LabelError) as raised:
        render_zpl(LABELS.values(), template("cryo-1.05x0.5in"), dpi=600)
    assert raised.value.field == "dpi"


# --- boundaries -----------------------------------------------------------------------------


def test_labels_loads_neither_the_database_nor_the_tui_nor_heavy_renderers():
    script = (
        "import json, sys, labels, labels.printers, labels.layout\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout
    )
    assert "labels.printers" in loaded
    forbidden = {"sqlalchemy", "sqlmodel", "textual", "tui", "fpdf", "PIL", "qrcode"}
    assert [m for m in loaded if m.split(".")[0] in forbidden] == []
    assert [m for m in loaded if m == "biobank.db" or m.startswith("biobank.services")] == []
