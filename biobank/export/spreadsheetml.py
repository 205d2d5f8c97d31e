"""A streaming XLSX (SpreadsheetML) writer: each sheet's XML is written row by row to a temporary
file, so a workbook of any number of rows is written in flat memory, then compressed into its
zip member once its size is known, so that the zip uses its 64-bit extensions only for a sheet
that needs them (over 4 GB), as Excel's own files do.

Decision: the workbook is written here rather than by a library, for speed. openpyxl's
write-only mode builds an XML element per cell (~15 µs each) and XlsxWriter's constant-memory
mode takes ~8 µs: the linked export (129 columns) ran at 0.2× the CSV export's rate with
openpyxl, and XlsxWriter alone would take longer than the whole CSV export. Here a row is one
string built from its values, a fraction of a microsecond a cell, and deflate runs at its
fastest level: the export runs at 0.7–1× the CSV's (`benchmarks/export_bench.py`). What it
writes is the least a spreadsheet reads as a typed workbook: text as inline strings (never a
shared-string table, which would have to be held until the end; never a formula), numbers and
booleans as values, dates and date-times as serial numbers under a date style, empty values as
no cell at all; one `styles.xml` with those two date styles, a `workbook.xml` naming the sheets,
their relationships, `[Content_Types].xml` and core properties. Every zip entry and the
properties carry a fixed time, so the same rows give the same bytes. openpyxl and pandas read
it back in the tests.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any
from xml.sax.saxutils import escape, quoteattr
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from biobank.errors import ValidationError
from biobank.export.cells import safe_text

MAX_TEXT = 32_767  # characters in a cell
FIXED_TIME = datetime(2000, 1, 1)  # of every entry and in the properties
ILLEGAL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")  # control characters XML refuses
FLUSH_ROWS = 1_000  # rows encoded and written at once
COMPRESS_LEVEL = 1

_SPACES = frozenset(" \t\n\r")  # XML whitespace, dropped at either end of a text unless kept
_EPOCH = date(1899, 12, 30).toordinal()  # day 0 of the 1900 date system
_DATE_STYLE, _DATETIME_STYLE = 1, 2  # indexes into `cellXfs` in `_STYLES`
_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELATIONSHIPS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE = "http://schemas.openxmlformats.org/package/2006"
_STYLES = (
    f'<styleSheet xmlns="{_MAIN}">'
    '<numFmts count="2"><numFmt numFmtId="164" formatCode="yyyy-mm-dd"/>'
    '<numFmt numFmtId="165" formatCode="yyyy-mm-dd h:mm:ss"/></numFmts>'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def _text(value: str) -> str:
    """Never a formula (`cells.safe_text`); spaces that start or end it kept."""
    if not value:
        return ""
    value = escape(safe_text(value))
    if value[0] in _SPACES or value[-1] in _SPACES:
        return f' t="inlineStr"><is><t xml:space="preserve">{value}</t></is></c>'
    return f' t="inlineStr"><is><t>{value}</t></is></c>'


def _integer(value: int) -> str:
    return f"><v>{value}</v></c>"


def _decimal(value: float | Decimal) -> str:
    if not math.isfinite(value):
        raise ValueError(f"XLSX cannot store the number {value}")
    return f"><v>{value!r}</v></c>" if type(value) is float else f"><v>{value}</v></c>"


def _boolean(value: bool) -> str:
    return ' t="b"><v>1</v></c>' if value else ' t="b"><v>0</v></c>'


def _serial(value: date) -> int:
    """Days since the 1900 system's day 0, which counts a 29 February 1900 that never was."""
    days = value.toordinal() - _EPOCH
    return days - 1 if 0 < days <= 60 else days


def _day(value: date) -> str:
    return f' s="{_DATE_STYLE}"><v>{_serial(value)}</v></c>'


def _moment(value: datetime) -> str:
    if value.tzinfo is not None:
        raise ValueError("XLSX cannot store a time zone: give local times")
    seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
    return f' s="{_DATETIME_STYLE}"><v>{_serial(value) + seconds / 86_400!r}</v></c>'


_CELLS: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: _integer,
    float: _decimal,
    Decimal: _decimal,
    bool: _boolean,
    date: _day,
    datetime: _moment,
}


def _cell(value: Any) -> str:
    """A cell's XML after its reference, for a value of a subclass (an enum's text, say)."""
    for kind in (bool, datetime, date, str, int, float, Decimal):
        if isinstance(value, kind):
            return _CELLS[kind](value)
    raise ValueError(f"XLSX cannot store {type(value).__name__} values")


def _column_letters(count: int) -> list[str]:
    """A, B, …, Z, AA, AB, … for `count` columns."""
    letters = []
    for number in range(1, count + 1):
        name = ""
        while number:
            number, rest = divmod(number - 1, 26)
            name = chr(65 + rest) + name
        letters.append(name)
    return letters


class Sheet:
    """One worksheet being written: `append` rows to it, in order."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self._written = 0  # rows, the first being row 1
        self._letters: list[str] = []

    def append(self, rows: Iterable[Sequence[Any]], header: Sequence[str], *, first: int) -> None:
        """Append rows of values, numbered from `first` in the errors that name them. A text
        longer than a cell holds or with a control character XML cannot carry is refused,
        naming its column (`header`) and row; so is a value XLSX has no type for."""
        if len(self._letters) < len(header):
            self._letters = _column_letters(len(header))
        letters, cells = self._letters, _CELLS
        pending: list[str] = []
        for number, values in enumerate(rows, start=first):
            self._written += 1
            at = str(self._written)
            try:
                line = "".join(
                    [
                        f'<c r="{letter}{at}"{tail}'
                        for letter, value in zip(letters, values)  # noqa: B905 (checked)
                        if value is not None and (tail := (cells.get(type(value)) or _cell)(value))
                    ]
                )
            except ValueError as error:
                raise _refusal(values, header, number, str(error)) from None
            if len(line) > MAX_TEXT or ILLEGAL_CHARACTERS.search(line):
                _check_texts(values, header, number)
            pending.append(f'<row r="{at}">{line}</row>')
            if len(pending) >= FLUSH_ROWS:
                self._write("".join(pending).encode())
                pending.clear()
        self._write("".join(pending).encode())


def _check_texts(values: Sequence[Any], header: Sequence[str], number: int) -> None:
    for name, value in zip(header, values, strict=True):
        if not isinstance(value, str):
            continue
        value = safe_text(value)
        if len(value) > MAX_TEXT:
            raise ValidationError(
                f"{name} holds {len(value):,} characters; an XLSX cell holds at most "
                f"{MAX_TEXT:,}: choose CSV or Parquet",
                field=name,
                row=number,
            )
        if ILLEGAL_CHARACTERS.search(value):
            raise ValidationError(
                f"{name} holds a control character that XLSX cannot store", field=name, row=number
            )


def _refusal(
    values: Sequence[Any], header: Sequence[str], number: int, reason: str
) -> ValidationError:
    """The error naming the first value of `values` that no cell can hold."""
    for name, value in zip(header, values, strict=True):
        if value is None:
            continue
        try:
            (_CELLS.get(type(value)) or _cell)(value)
        except ValueError:
            return ValidationError(f"{name}: {reason}", field=name, row=number)
    return ValidationError(reason, row=number)


class Workbook:
    """An XLSX file of the sheets named, written into `file` one sheet after another; a context
    manager, whose end finishes the file."""

    def __init__(self, file: IO[bytes], sheet_names: Sequence[str]) -> None:
        self._zip = ZipFile(file, "w", ZIP_DEFLATED, allowZip64=True)
        self._names = list(sheet_names)
        self._next = 0
        for name, content in self._parts():
            with self._zip.open(_entry(name), "w") as target:
                target.write((_DECLARATION + content).encode())

    @contextmanager
    def sheet(self, name: str) -> Iterator[Sheet]:
        """The next sheet, `name`, open for its rows (sheets are written in their order)."""
        if self._names[self._next] != name:
            raise ValueError(f"sheet {name!r} comes out of order")
        self._next += 1
        with tempfile.TemporaryFile() as spool:
            spool.write(f'{_DECLARATION}<worksheet xmlns="{_MAIN}"><sheetData>'.encode())
            yield Sheet(spool.write)
            spool.write(b"</sheetData></worksheet>")
            entry = _entry(f"xl/worksheets/sheet{self._next}.xml")
            entry.file_size = spool.tell()  # 64-bit sizes only if it needs them
            spool.seek(0)
            with self._zip.open(entry, "w") as target:
                shutil.copyfileobj(spool, target, 1 << 20)

    def __enter__(self) -> Workbook:
        return self

    def __exit__(self, *error: object) -> None:
        """Ends the zip (its central directory), after an error too: the file is whole."""
        self._zip.close()

    def _parts(self) -> Iterator[tuple[str, str]]:
        count = len(self._names)
        sheets = "".join(
            f'<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            for n in range(1, count + 1)
        )
        yield (
            "[Content_Types].xml",
            f'<Types xmlns="{_PACKAGE}/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            f"{sheets}"
            '<Override PartName="/xl/styles.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            '<Override PartName="/docProps/core.xml" '
            'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
            "</Types>",
        )
        yield (
            "_rels/.rels",
            f'<Relationships xmlns="{_PACKAGE}/relationships">'
            f'<Relationship Id="rId1" Type="{_RELATIONSHIPS}/officeDocument" '
            'Target="xl/workbook.xml"/>'
            f'<Relationship Id="rId2" Type="{_PACKAGE}/relationships/metadata/'
            'core-properties" Target="docProps/core.xml"/>'
            "</Relationships>",
        )
        stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
        yield (
            "docProps/core.xml",
            f'<cp:coreProperties xmlns:cp="{_PACKAGE}/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:dcterms="http://purl.org/dc/terms/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<dc:creator>biobank</dc:creator>"
            f'<dcterms:created xsi:type="dcterms:W3CDTF">{stamp}</dcterms:created>'
            f'<dcterms:modified xsi:type="dcterms:W3CDTF">{stamp}</dcterms:modified>'
            "</cp:coreProperties>",
        )
        yield (
            "xl/workbook.xml",
            f'<workbook xmlns="{_MAIN}" xmlns:r="{_RELATIONSHIPS}">'
            '<bookViews><workbookView activeTab="0"/></bookViews><sheets>'
            + "".join(
                f'<sheet name={quoteattr(name)} sheetId="{n}" r:id="rId{n}"/>'
                for n, name in enumerate(self._names, start=1)
            )
            + "</sheets></workbook>",
        )
        yield (
            "xl/_rels/workbook.xml.rels",
            f'<Relationships xmlns="{_PACKAGE}/relationships">'
            + "".join(
                f'<Relationship Id="rId{n}" Type="{_RELATIONSHIPS}/worksheet" '
                f'Target="worksheets/sheet{n}.xml"/>'
                for n in range(1, count + 1)
            )
            + f'<Relationship Id="rId{count + 1}" Type="{_RELATIONSHIPS}/styles" '
            'Target="styles.xml"/></Relationships>',
        )
        yield "xl/styles.xml", _STYLES


def _entry(name: str) -> ZipInfo:
    """A zip entry at the fixed time, so that the same rows give the same bytes (a replayed
    export is compared by its hashes)."""
    entry = ZipInfo(name, date_time=FIXED_TIME.timetuple()[:6])
    entry.compress_type = ZIP_DEFLATED
    entry.external_attr = 0o600 << 16
    # The fastest deflate: a quarter of the writing time at the default level, for a file
    # about a quarter larger. The attribute has no public name before Python 3.13.
    entry._compresslevel = COMPRESS_LEVEL  # type: ignore[attr-defined]
    return entry
