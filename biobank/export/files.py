"""Writing an export file so that it is either complete or absent: the content goes to a hidden
temporary file beside the target and is renamed into place only once it is whole, so a killed or
failed export never leaves a file that looks finished (and an export's whole folder is renamed
into place only once its run is committed: `services.exports`). Rows are consumed in batches,
so memory stays flat however many there are, and a progress callback moves once per batch."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from biobank.errors import ValidationError
from biobank.export.columns import Row
from biobank.tabular import chunks

BATCH_ROWS = 10_000

Progress = Callable[[int], object]
"""Called with the number of rows written so far, after each batch and at the end."""


@dataclass(frozen=True)
class Written:
    """A finished file: what the manifest records of it."""

    path: Path
    rows: int
    sha256: str
    bytes: int


class Batches:
    """The rows in lists of `BATCH_ROWS`; `done` counts those of the batches already written.
    A row without one value per column is refused, naming it: written, it would shift every
    value after the gap into the wrong column."""

    def __init__(self, rows: Iterable[Row], progress: Progress | None, *, width: int) -> None:
        self._rows = rows
        self._progress = progress
        self._width = width
        self.done = 0

    def __iter__(self) -> Iterator[list[Row]]:
        for batch in chunks(self._rows, BATCH_ROWS):
            if isinstance(batch[0], Mapping | str):
                raise TypeError("export rows are sequences of values in the columns' order")
            if any(len(row) != self._width for row in batch):
                at = next(i for i, row in enumerate(batch) if len(row) != self._width)
                raise ValidationError(
                    f"row {self.done + at + 1} has {len(batch[at])} values for "
                    f"{self._width} columns",
                    field="columns",
                    row=self.done + at + 1,
                )
            yield batch
            self.done += len(batch)
            if self._progress is not None:
                self._progress(self.done)


def write_atomically(path: Path, write: Callable[[IO[Any]], int], *, text: bool) -> Written:
    """Run `write(file)` (which returns its row count) on a temporary file, then rename it to
    `path`. `text` files are UTF-8 with newlines left to the writer (as `csv` wants)."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as error:
        raise _cannot_write(path, error) from None
    temporary = Path(name)
    try:
        mode = {"mode": "w", "encoding": "utf-8", "newline": ""} if text else {"mode": "wb"}
        with open(fd, **mode) as file:
            rows = write(file)
            file.flush()
            os.fsync(file.fileno())
        sha256, size = _digest(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _cannot_write(path, error) from error
        raise
    return Written(path=path, rows=rows, sha256=sha256, bytes=size)


def _digest(path: Path) -> tuple[str, int]:
    """SHA-256 of the bytes as they are on disk (zip and Parquet writers seek back and patch)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _cannot_write(path: Path, error: OSError) -> ValidationError:
    reason = error.strerror or str(error)
    return ValidationError(f"cannot write {path}: {reason}", field="path", value=str(path))
