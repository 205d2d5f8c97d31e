"""Row-per-specimen files: CSV, XLSX, Parquet, CSV under MIABIS names, and the data dictionary.

CSV cells are what Python's `csv` writes: empty for None, `True`/`False`, ISO dates, numbers as
`repr`. XLSX and Parquet keep the types of the column kinds. Every row of a CSV or XLSX file goes
through `cells.safe_rows`, so no text in it is ever a formula. Each writer streams (see
`files.Batches`) and writes atomically (see `files.write_atomically`). openpyxl and pyarrow are
imported by the writer that needs them: importing biobank stays fast, and pyarrow is an extra.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from biobank.errors import ValidationError
from biobank.export.cells import safe_rows
from biobank.export.columns import (
    DICTIONARY_HEADER,
    VALUE_LABELS_HEADER,
    Column,
    Row,
    checked,
    dictionary_rows,
    value_label_rows,
)
from biobank.export.fhir_resources import Records
from biobank.export.files import Batches, Progress, Written, write_atomically
from biobank.export.miabis import MiabisRows

XLSX_MAX_ROWS = 1_048_575  # a worksheet's 1,048,576 rows less the header
XLSX_MAX_TEXT = 32_767  # characters in a cell
FIXED_TIME = datetime(2000, 1, 1)  # in XLSX metadata, so the same rows give the same bytes


def write_csv(
    path: Path, columns: Iterable[Column], rows: Iterable[Row], progress: Progress | None = None
) -> Written:
    columns = checked(columns)
    return _write_delimited(path, [c.name for c in columns], len(columns), rows, progress)


def write_miabis_csv(
    path: Path,
    columns: Iterable[Column],
    rows: Iterable[Row],
    records: Records,
    progress: Progress | None = None,
) -> Written:
    """The rows under MIABIS attribute names, with MIABIS values (`export.miabis`); `records`
    gives each participant's consent (their Use & Access conditions)."""
    columns = checked(columns)
    miabis = MiabisRows(columns, records)
    return _write_delimited(path, miabis.header, len(columns), rows, progress, miabis.rows)


def write_dictionary(path: Path, columns: Iterable[Column]) -> Written:
    """The data dictionary: one row per column (rows counts the columns)."""
    columns = checked(columns)

    def write(file: IO[str]) -> int:
        writer = csv.writer(file)
        writer.writerow(DICTIONARY_HEADER)
        writer.writerows(safe_rows(dictionary_rows(columns)))
        return len(columns)

    return write_atomically(path, write, text=True)


def write_value_labels(path: Path, columns: Iterable[Column]) -> Written:
    """Every coded column's codes and labels, one row each (rows counts them)."""
    columns = checked(columns)

    def write(file: IO[str]) -> int:
        writer = csv.writer(file)
        writer.writerow(VALUE_LABELS_HEADER)
        rows = list(safe_rows(value_label_rows(columns)))
        writer.writerows(rows)
        return len(rows)

    return write_atomically(path, write, text=True)


def _write_delimited(
    path: Path,
    header: list[str],
    width: int,
    rows: Iterable[Row],
    progress: Progress | None,
    shown: Callable[[list[Row]], Iterable[Row]] | None = None,
) -> Written:
    """`rows` of `width` values under `header`, each batch as `shown` writes it (as it is)."""

    def write(file: IO[str]) -> int:
        writer = csv.writer(file)
        writer.writerows(safe_rows([header]))
        batches = Batches(rows, progress, width=width)
        for batch in batches:
            writer.writerows(safe_rows(batch if shown is None else shown(batch)))
        return batches.done

    return write_atomically(path, write, text=True)


def write_xlsx(
    path: Path, columns: Iterable[Column], rows: Iterable[Row], progress: Progress | None = None
) -> Written:
    """A `data` sheet with typed cells (dates as dates) and a `dictionary` sheet."""
    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    columns = checked(columns)
    names = [c.name for c in columns]

    def write(file: IO[bytes]) -> int:
        workbook = Workbook(write_only=True)
        data = workbook.create_sheet("data")
        dictionary = workbook.create_sheet("dictionary")
        batches = Batches(rows, progress, width=len(columns))
        try:
            data.append(names)
            for batch in batches:
                if batches.done + len(batch) > XLSX_MAX_ROWS:
                    raise ValidationError(
                        f"XLSX holds at most {XLSX_MAX_ROWS:,} rows: choose CSV or Parquet",
                        field="format",
                        value="xlsx",
                    )
                _append(data, safe_rows(batch), names, first=batches.done + 1)
            dictionary.append(DICTIONARY_HEADER)
            _append(dictionary, safe_rows(dictionary_rows(columns)), DICTIONARY_HEADER, first=1)
        except BaseException:
            data.close()  # else openpyxl's sheet writers fail noisily when they are collected
            dictionary.close()
            raise
        workbook.properties.created = workbook.properties.modified = FIXED_TIME
        ExcelWriter(workbook, _SteadyZip(file, "w", ZIP_DEFLATED, allowZip64=True)).save()
        return batches.done

    return write_atomically(path, write, text=False)


def _append(sheet: Any, rows: Iterable[list[Any]], header: Sequence[str], *, first: int) -> None:
    """Append rows of safe values (numbered from `first`), each text kept whole and as text.
    openpyxl would cut a text longer than a cell holds (refused instead), make "#N/A" and the
    like error values (written as text instead) and fail on a control character (refused,
    naming the column)."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE
    from openpyxl.utils.exceptions import IllegalCharacterError

    for number, values in enumerate(rows, start=first):
        for at, value in enumerate(values):
            if not isinstance(value, str):
                continue
            if len(value) > XLSX_MAX_TEXT:
                raise ValidationError(
                    f"{header[at]} holds {len(value):,} characters; an XLSX cell holds at most "
                    f"{XLSX_MAX_TEXT:,}: choose CSV or Parquet",
                    field=header[at],
                    row=number,
                )
            if value in ERROR_CODES:
                values[at] = WriteOnlyCell(sheet, value)
                values[at].data_type = "s"
        try:
            sheet.append(values)
        except IllegalCharacterError:
            name = next(
                n
                for n, v in zip(header, values, strict=True)
                if isinstance(v, str) and ILLEGAL_CHARACTERS_RE.search(v)
            )
            raise ValidationError(
                f"{name} holds a control character that XLSX cannot store", field=name, row=number
            ) from None


class _SteadyZip(ZipFile):
    """A zip whose entries carry a fixed time instead of the clock's, so that writing the same
    rows again gives the same SHA-256 (a replayed export can be compared by its hashes)."""

    _TIME = FIXED_TIME.timetuple()[:6]

    def writestr(self, zinfo_or_arcname: Any, data: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(zinfo_or_arcname, str):
            zinfo_or_arcname = self._entry(zinfo_or_arcname)
        super().writestr(zinfo_or_arcname, data, *args, **kwargs)

    def write(self, filename: Any, arcname: Any = None, *args: Any, **kwargs: Any) -> None:
        """openpyxl writes a write-only sheet from its temporary file: copy it in blocks."""
        entry = self._entry(arcname or os.path.basename(filename))
        entry.file_size = os.path.getsize(filename)
        with open(filename, "rb") as source, self.open(entry, "w") as target:
            shutil.copyfileobj(source, target, 1 << 20)

    def _entry(self, name: str) -> ZipInfo:
        entry = ZipInfo(name, date_time=self._TIME)
        entry.compress_type = self.compression
        entry.external_attr = 0o600 << 16
        return entry


def write_parquet(
    path: Path, columns: Iterable[Column], rows: Iterable[Row], progress: Progress | None = None
) -> Written:
    """One row group per batch; each field carries its label, unit and codes as metadata."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValidationError(
            "Parquet needs the optional extra: pip install 'biobank[parquet]'",
            field="format",
            value="parquet",
        ) from None

    columns = checked(columns)
    types = {
        "string": pa.string(),
        "integer": pa.int64(),
        "decimal": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "year": pa.int32(),
    }
    schema = pa.schema([pa.field(c.name, types[c.kind], metadata=_metadata(c)) for c in columns])

    def write(file: IO[bytes]) -> int:
        with pq.ParquetWriter(file, schema) as writer:
            batches = Batches(rows, progress, width=len(columns))
            for batch in batches:
                arrays = []
                by_column = zip(*batch, strict=True)
                for column, field, values in zip(columns, schema, by_column, strict=True):
                    try:
                        arrays.append(pa.array(values, type=field.type))
                    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
                        first = batches.done + 1
                        raise ValidationError(
                            f"{column.name} ({column.kind}) in rows {first}–"
                            f"{first + len(batch) - 1}: {e}",
                            field=column.name,
                        ) from None
                writer.write_batch(pa.record_batch(arrays, schema=schema))
        return batches.done

    return write_atomically(path, write, text=False)


def _metadata(column: Column) -> dict[str, str]:
    found = {
        "label": column.label,
        "unit": column.unit,
        "code_system": column.code_system,
        "code": column.code,
        "description": column.description,
    }
    return {key: value for key, value in found.items() if value}
