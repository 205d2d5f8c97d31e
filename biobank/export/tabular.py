"""Row-per-specimen files: CSV, XLSX, Parquet, CSV under MIABIS names, and the data dictionary.

CSV cells are what Python's `csv` writes: empty for None, `True`/`False`, ISO dates, numbers as
`repr`. XLSX and Parquet keep the types of the column kinds. No text in a CSV or XLSX file is
ever a formula: a CSV's rows go through `cells.safe_rows`, and `export.spreadsheetml`, which
writes the XLSX, puts each text through `cells.safe_text`. Each writer streams (see
`files.Batches`) and writes atomically (see `files.write_atomically`). pyarrow is imported by the
writer that needs it: importing biobank stays fast, and pyarrow is an extra.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

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
from biobank.export.spreadsheetml import MAX_TEXT as XLSX_MAX_TEXT  # noqa: F401 (known by it)
from biobank.export.spreadsheetml import Workbook

XLSX_MAX_ROWS = 1_048_575  # a worksheet's 1,048,576 rows less the header


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
    columns = checked(columns)
    names = [c.name for c in columns]

    def write(file: IO[bytes]) -> int:
        batches = Batches(rows, progress, width=len(columns))
        with Workbook(file, ["data", "dictionary"]) as workbook:
            with workbook.sheet("data") as data:
                data.append([names], names, first=0)
                for batch in batches:
                    if batches.done + len(batch) > XLSX_MAX_ROWS:
                        raise ValidationError(
                            f"XLSX holds at most {XLSX_MAX_ROWS:,} rows: choose CSV or Parquet",
                            field="format",
                            value="xlsx",
                        )
                    data.append(batch, names, first=batches.done + 1)
            with workbook.sheet("dictionary") as dictionary:
                dictionary.append([DICTIONARY_HEADER], DICTIONARY_HEADER, first=0)
                dictionary.append(dictionary_rows(columns), DICTIONARY_HEADER, first=1)
        return batches.done

    return write_atomically(path, write, text=False)


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
