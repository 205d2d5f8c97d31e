"""Reading a workbook (.xlsx, as Excel, LibreOffice and Google Sheets save one) as rows of text
cells, as the same sheet saved as CSV would read: labs keep their inventories in workbooks, and
saving one as CSV first is a step that goes wrong (dates written in the machine's locale, the
wrong sheet saved, leading zeros lost).

A date cell reads as an ISO date (`2017-04-28`), a time cell as `09:30` (or `09:30:15`), a whole
number as `250` whatever its format, a formula as the value Excel last computed for it (a
workbook saved by a program that computes nothing has none: the cell reads blank), a merged
cell as its value in every row and column it spans, as it shows on screen. A workbook
is a zip file: the sheet it holds is read as a stream, and refused when it unpacks to more than
a CSV file may hold (a zip bomb). The older binary formats (.xls) and OpenDocument (.ods) are
refused, saying how to save them.

openpyxl reads it, with defusedxml guarding its XML parser against entity expansion."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from biobank.errors import ValidationError
from biobank.inputs import IMPORT_LIMIT, checked_input

if TYPE_CHECKING:  # openpyxl is imported only when a workbook is read: it takes a while
    from openpyxl.worksheet.cell_range import CellRange

ZIP_SIGNATURE = b"PK\x03\x04"  # .xlsx and .ods alike
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003's .xls
_ODS = b"application/vnd.oasis.opendocument.spreadsheet"
MERGE_COLUMNS = 256  # a merge as wide as a lab's sheet, at most


def is_workbook(head: bytes, path: Path, what: str) -> bool:
    """Whether a file whose first bytes are `head` is a workbook to read here; a workbook of
    a format not read here is refused, saying how to save it."""
    if head.startswith(OLE_SIGNATURE):
        raise _refused(
            path, what, "it is an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV"
        )
    return head.startswith(ZIP_SIGNATURE)


class Sheet(NamedTuple):
    """A worksheet to read: its name, and its merged cells (`merged`)."""

    name: str
    merged: tuple[CellRange, ...] = ()


def choose_sheet(path: Path, what: str, wanted: str | None, notices: list[str]) -> Sheet:
    """The sheet to read: `wanted` (its name, whatever its case), else the first worksheet
    (chart sheets hold no cells); a notice says which was read when the workbook has others,
    and which cells of it are merged."""
    with _workbook(path, what) as book:
        names: list[str] = [sheet.title for sheet in book.worksheets]
        if not names:
            raise _refused(path, what, "the workbook has no worksheet")
        if wanted is None:
            name = names[0]
        else:
            found = [n for n in names if n.strip().casefold() == wanted.strip().casefold()]
            if not found:
                raise ValidationError(
                    f"the workbook {path} has no sheet {wanted!r} (sheets: {_listed(names)})",
                    field="sheet",
                    value=wanted,
                )
            name = found[0]
        try:
            merged = merged_cells(book[name])
        except Exception as error:  # a list of merges that is no list: a part malformed
            reason = f"its merged cells are not readable ({error})"
            raise _refused(path, what, reason) from None
    wide = next((m for m in merged if m.max_col - m.min_col >= MERGE_COLUMNS), None)
    if wide is not None:  # each row it spans would be written out that wide
        reason = f"cells {wide.coord} are merged across more than {MERGE_COLUMNS} columns"
        raise _refused(path, what, reason)
    if wanted is None and len(names) > 1:
        notices.append(
            f"{path.name}: read its first sheet, {name!r}, of {_listed(names)} (name another "
            "with --sheet)"
        )
    if merged:
        shown = ", ".join(r.coord for r in merged[:3]) + (", …" if len(merged) > 3 else "")
        notices.append(
            f"{path.name}: {len(merged)} merged cells ({shown}) read as their value in every "
            "row and column they span"
        )
    return Sheet(name, merged)


def rows(path: Path, what: str, sheet: Sheet, limit: int) -> Iterator[tuple[int, list[str]]]:
    """(row number as the spreadsheet shows it, cells as text) of each row that is not blank,
    trailing blank cells left off; a merged cell's value in every cell it spans, as it shows;
    a row longer than `limit` characters is refused naming it."""
    starting: dict[int, list[CellRange]] = {}
    for merge in sheet.merged:
        starting.setdefault(merge.min_row, []).append(merge)
    spanning: list[tuple[CellRange, str]] = []  # merges over the rows being read, and values
    with _workbook(path, what) as book:
        worksheet = book[sheet.name]
        worksheet.reset_dimensions()  # a saved dimension may be wrong: read every cell there is
        read = enumerate(worksheet.iter_rows(values_only=True), start=1)
        number = 0
        while True:
            try:
                number, values = next(read)
            except StopIteration:
                return
            except Exception as error:  # the sheet's XML malformed past what was read
                reason = f"row {number + 1}: not readable ({error})"
                raise _refused(path, what, reason) from None
            cells = [cell_text(value) for value in values]
            if spanning or number in starting:
                spanning = _spread(cells, number, spanning, starting.pop(number, []))
            while cells and not cells[-1].strip():
                cells.pop()
            if not cells:
                continue
            if sum(map(len, cells)) > limit:
                raise ValidationError(
                    f"cannot read the {what} {path}: row {number}: longer than {limit:,} "
                    "characters",
                    field="file",
                    value=str(path),
                )
            yield number, cells


def _spread(
    cells: list[str],
    number: int,
    spanning: list[tuple[CellRange, str]],
    starting: list[CellRange],
) -> list[tuple[CellRange, str]]:
    """Row `number`'s cells with the values of the merges over it written in (each merge's
    value is its first cell's); the merges that go on below it."""
    for merge in starting:
        first = merge.min_col - 1
        spanning.append((merge, cells[first] if first < len(cells) else ""))
    for merge, text in spanning:
        if len(cells) < merge.max_col:
            cells.extend([""] * (merge.max_col - len(cells)))
        cells[merge.min_col - 1 : merge.max_col] = [text] * (merge.max_col - merge.min_col + 1)
    return [(merge, text) for merge, text in spanning if merge.max_row > number]


_MERGES = re.compile(rb"<(?:[\w.-]+:)?mergeCells\b")
_MERGE_REF = re.compile(rb'<(?:[\w.-]+:)?mergeCell\b[^>]*?\bref="([^"]+)"')


def merged_cells(worksheet: Any) -> tuple[CellRange, ...]:
    """A worksheet's merged cells, top to bottom and left to right. They are listed in its
    XML after every row: its bytes are scanned for that list, rather than every cell parsed
    twice (openpyxl reads them only when it holds the whole sheet in memory; a read-only
    sheet's XML is its `_get_source`)."""
    from openpyxl.worksheet.cell_range import CellRange

    tail = b""
    with worksheet._get_source() as xml:
        while chunk := xml.read(1 << 20):
            text = tail + chunk
            found = _MERGES.search(text)
            if found:  # the list, and the little that follows it
                listed = _MERGE_REF.findall(text[found.start() :] + xml.read())
                ranges = (CellRange(ref.decode("ascii", "replace")) for ref in listed)
                return tuple(sorted(ranges, key=lambda r: (r.min_row, r.min_col)))
            tail = text[-64:]
    return ()


def cell_text(value: Any) -> str:
    """A cell's value as the text a CSV export would give it, in forms the importers read."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: a bool is one
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        if value.time() == time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if value.second else "minutes")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat(timespec="seconds" if value.second else "minutes")
    if isinstance(value, timedelta):  # a duration format: hours and minutes
        minutes = round(value.total_seconds() / 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}"
    return str(value)  # int, float (shortest form), an error code such as #N/A


@contextmanager
def _workbook(path: Path, what: str) -> Iterator[Any]:
    """The workbook open for reading, as a stream, through `checked_input`; refused when it
    is not one openpyxl reads, or when it unpacks to more than IMPORT_LIMIT bytes."""
    from openpyxl import load_workbook

    with checked_input(path, IMPORT_LIMIT, what) as file:
        try:
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
                if "mimetype" in names and archive.read("mimetype").startswith(_ODS):
                    reason = "it is an OpenDocument spreadsheet (.ods): save it as .xlsx or CSV"
                    raise _refused(path, what, reason)
                if sum(info.file_size for info in archive.infolist()) > IMPORT_LIMIT:
                    reason = f"it unpacks to more than {IMPORT_LIMIT // 1_000_000:,} MB"
                    raise _refused(path, what, reason)
            file.seek(0)
            book = load_workbook(file, read_only=True, data_only=True, keep_links=False)
        except ValidationError:
            raise
        except Exception as error:  # openpyxl's many: not a zip, a part missing or malformed
            raise _refused(path, what, f"not a readable .xlsx workbook ({error})") from None
        try:
            yield book
        finally:
            book.close()


def _listed(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _refused(path: Path, what: str, reason: str) -> ValidationError:
    return ValidationError(
        f"cannot read the {what} {path}: {reason}", field="file", value=str(path)
    )
