"""Reading a workbook (.xlsx, as Excel, LibreOffice and Google Sheets save one) as rows of text
cells, as the same sheet saved as CSV would read: labs keep their inventories in workbooks, and
saving one as CSV first is a step that goes wrong (dates written in the machine's locale, the
wrong sheet saved, leading zeros lost).

A date cell reads as an ISO date (`2017-04-28`), a time cell as `09:30` (or `09:30:15`), a whole
number as `250` whatever its format, a formula as the value Excel last computed for it (a
workbook saved by a program that computes nothing has none: the cell reads blank). A workbook
is a zip file: the sheet it holds is read as a stream, and refused when it unpacks to more than
a CSV file may hold (a zip bomb). The older binary formats (.xls) and OpenDocument (.ods) are
refused, saying how to save them.

openpyxl reads it, with defusedxml guarding its XML parser against entity expansion."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from biobank.errors import ValidationError
from biobank.inputs import IMPORT_LIMIT, checked_input

ZIP_SIGNATURE = b"PK\x03\x04"  # .xlsx and .ods alike
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003's .xls
_ODS = b"application/vnd.oasis.opendocument.spreadsheet"


def is_workbook(head: bytes, path: Path, what: str) -> bool:
    """Whether a file whose first bytes are `head` is a workbook to read here; a workbook of
    a format not read here is refused, saying how to save it."""
    if head.startswith(OLE_SIGNATURE):
        raise _refused(
            path, what, "it is an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV"
        )
    return head.startswith(ZIP_SIGNATURE)


def choose_sheet(path: Path, what: str, wanted: str | None, notices: list[str]) -> str:
    """The sheet to read: `wanted` (its name, whatever its case), else the first; a notice
    says which was read when the workbook has others."""
    names = sheet_names(path, what)
    if wanted is not None:
        found = [n for n in names if n.strip().casefold() == wanted.strip().casefold()]
        if not found:
            raise ValidationError(
                f"the workbook {path} has no sheet {wanted!r} (sheets: {_listed(names)})",
                field="sheet",
                value=wanted,
            )
        return found[0]
    if len(names) > 1:
        notices.append(
            f"{path.name}: read its first sheet, {names[0]!r}, of {_listed(names)} (name "
            "another with --sheet)"
        )
    return names[0]


def sheet_names(path: Path, what: str) -> list[str]:
    """The workbook's worksheets, in order (chart sheets hold no cells)."""
    with _workbook(path, what) as book:
        worksheets: list[str] = [sheet.title for sheet in book.worksheets]
    if not worksheets:
        raise _refused(path, what, "the workbook has no worksheet")
    return worksheets


def rows(path: Path, what: str, sheet: str, limit: int) -> Iterator[tuple[int, list[str]]]:
    """(row number as the spreadsheet shows it, cells as text) of each row that is not blank,
    trailing blank cells left off; a row longer than `limit` characters is refused naming it."""
    with _workbook(path, what) as book:
        worksheet = book[sheet]
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
    from openpyxl import load_workbook  # only when a workbook is read: it takes a while

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
