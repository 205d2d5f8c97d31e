"""Reading the files labs keep: CSV in whatever encoding and delimiter a spreadsheet or an
export tool wrote, or a workbook's sheet (`workbooks`), a record at a time in bounded memory;
and the spool a checked file waits in before it is written. Shared by every importer so each
reads files the same way and reports the same notices."""

from __future__ import annotations

import codecs
import csv
import io
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any, BinaryIO

from biobank import workbooks
from biobank.errors import ValidationError
from biobank.inputs import IMPORT_LIMIT, checked_input

DELIMITERS = ",;\t"
FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # what Excel writes in the West; latin-1 reads all
SAMPLE = 1 << 16  # characters the delimiter is sniffed from
MAX_RECORD = 1_000_000  # characters: a REDCap export of thousands of fields fits


@dataclass(frozen=True)
class Source:
    """A file to read: CSV in `encoding` with `delimiter`, or a workbook's `sheet` (its
    encoding "xlsx", no delimiter)."""

    path: Path
    encoding: str
    delimiter: str
    what: str
    sheet: workbooks.Sheet | None = None

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(first line, cells) of each record that is not blank (a workbook's: its row number).
        A cell or a record beyond the limits is refused naming its line, before it fills
        memory."""
        if self.sheet is not None:
            yield from workbooks.rows(self.path, self.what, self.sheet, MAX_RECORD)
            return
        with (
            checked_input(self.path, IMPORT_LIMIT, self.what) as raw,
            io.TextIOWrapper(raw, encoding=self.encoding, newline="") as file,
        ):
            lines = _Lines(file)
            reader = csv.reader(lines, delimiter=self.delimiter)
            last_line = 0
            try:
                for cells in reader:
                    line, last_line = last_line + 1, reader.line_num
                    lines.taken = 0
                    if any(cell.strip() for cell in cells):
                        yield line, cells
            except csv.Error as error:
                raise ValidationError(
                    f"cannot read the {self.what} {self.path}: line {lines.read}: {error}",
                    field="file",
                    value=str(self.path),
                ) from None


class _Lines:
    """A text file's lines for `csv.reader`, counted, and a record (quoted line breaks spread
    one over several lines) refused past MAX_RECORD characters, before it fills memory. Its
    reader sets `taken` to 0 as each record ends."""

    def __init__(self, file: IO[str]):
        self.file = file
        self.read = 0  # lines
        self.taken = 0  # characters of the record being read

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.file.readline(MAX_RECORD + 1 - self.taken)
        if not line:
            raise StopIteration
        self.read += 1
        self.taken += len(line)
        if self.taken > MAX_RECORD:
            raise csv.Error(f"a record longer than {MAX_RECORD:,} characters")
        return line


def open_source(path: Path, notices: list[str], what: str, *, sheet: str | None = None) -> Source:
    """A CSV file of at most IMPORT_LIMIT bytes with its encoding and delimiter found, or a
    workbook's sheet (`sheet`, else its first); `what` is how messages name it ("sheet", "data
    dictionary"…)."""
    with checked_input(path, IMPORT_LIMIT, what) as file:
        head = file.read(len(workbooks.OLE_SIGNATURE))
    if workbooks.is_workbook(head, path, what):
        chosen = workbooks.choose_sheet(path, what, sheet, notices)
        return Source(path, "xlsx", "", what, sheet=chosen)
    if sheet is not None:
        notices.append(f"{path.name} is not a workbook: it has no sheets, --sheet is ignored")
    encoding = encoding_of(path, what)
    with (
        checked_input(path, IMPORT_LIMIT, what) as raw,
        io.TextIOWrapper(raw, encoding=encoding, newline="") as file,
    ):
        head = file.read(SAMPLE)
    lines = io.StringIO(head, newline="").readlines()
    if len(head) == SAMPLE and len(lines) > 1:
        lines.pop()  # cut short
    if encoding in FALLBACK_ENCODINGS:
        notices.append(
            f"{path.name} is not UTF-8: it was read as {encoding}; check accented characters "
            "(or save it from the spreadsheet as CSV UTF-8)"
        )
    return Source(path, encoding, delimiter_of([line for line in lines if line.strip()]), what)


def encoding_of(path: Path, what: str) -> str:
    """UTF-8 (with or without a BOM), UTF-16 with a BOM, else what Excel writes in the West."""
    with checked_input(path, IMPORT_LIMIT, what) as file:
        head = file.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        return next(e for e in ("utf-8", *FALLBACK_ENCODINGS) if _decodes(file, e))


def _decodes(file: BinaryIO, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    file.seek(0)
    try:
        while chunk := file.read(1 << 20):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def delimiter_of(lines: list[str]) -> str:
    """Sniffed from the first lines that are not blank; else the one the header uses most."""
    try:
        return csv.Sniffer().sniff("".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        return max(DELIMITERS, key=lines[0].count) if lines else ","


def chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def new_spool() -> IO[bytes]:
    """A temporary file for the checked batches of a file too large to hold in memory; the
    plan that holds it owns it, and `unspool` closes it."""
    return tempfile.TemporaryFile()


def spool_batch(file: IO[bytes], batch: Any) -> None:
    pickle.dump(batch, file, protocol=pickle.HIGHEST_PROTOCOL)


def unspool(file: IO[bytes], *, close: bool = True) -> Iterator[Any]:
    """The batches spooled, in order, from the start; the file is closed after the last
    unless it is to be read again (`close=False`)."""
    file.seek(0)
    try:
        while True:
            try:
                yield pickle.load(file)
            except EOFError:
                return
    finally:
        if close:
            file.close()
