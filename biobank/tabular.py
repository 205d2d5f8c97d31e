"""Reading the files labs keep: CSV in whatever encoding and delimiter a spreadsheet or an
export tool wrote, and the TOML mapping files that say how to read them; and the spool a
checked file waits in before it is written. Shared by every importer so each reads files the
same way and reports the same notices."""

from __future__ import annotations

import codecs
import csv
import pickle
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from biobank.errors import ValidationError

DELIMITERS = ",;\t"
FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # what Excel writes in the West; latin-1 reads all


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValidationError(
            f"cannot read the mapping {path}: {error}", field="mapping", value=str(path)
        ) from None


@dataclass(frozen=True)
class Source:
    path: Path
    encoding: str
    delimiter: str

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(first line, cells) of each record that is not blank."""
        with self.path.open(encoding=self.encoding, newline="") as file:
            reader = csv.reader(file, delimiter=self.delimiter)
            last_line = 0
            for cells in reader:
                line, last_line = last_line + 1, reader.line_num
                if any(cell.strip() for cell in cells):
                    yield line, cells


def open_source(path: Path, notices: list[str]) -> Source:
    try:
        encoding = encoding_of(path)
        with path.open(encoding=encoding, newline="") as file:
            sample = [line for line in file.readlines(1 << 16) if line.strip()]
    except OSError as error:
        raise ValidationError(
            f"cannot read {path}: {error.strerror}", field="file", value=str(path)
        ) from None
    if encoding in FALLBACK_ENCODINGS:
        notices.append(
            f"{path.name} is not UTF-8: it was read as {encoding}; check accented characters "
            "(or save it from the spreadsheet as CSV UTF-8)"
        )
    return Source(path, encoding, delimiter_of(sample))


def encoding_of(path: Path) -> str:
    """UTF-8 (with or without a BOM), UTF-16 with a BOM, else what Excel writes in the West."""
    with path.open("rb") as file:
        head = file.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return next(e for e in ("utf-8", *FALLBACK_ENCODINGS) if _decodes(path, e))


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as file:
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
