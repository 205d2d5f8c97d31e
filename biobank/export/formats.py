"""The export formats, each registered once: its name (what the CLI and the workstation offer
and what a run records), the files it writes into the export's folder and its writer. A new
format is one line here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from biobank.export.columns import Column, Row
from biobank.export.fhir import write_fhir_bundle
from biobank.export.fhir_ndjson import FILE_NAMES as NDJSON_FILES
from biobank.export.fhir_ndjson import write_fhir_ndjson
from biobank.export.fhir_resources import Records
from biobank.export.files import Written
from biobank.export.tabular import write_csv, write_miabis_csv, write_parquet, write_xlsx

Writer = Callable[[Path, list[Column], Iterable[Row], Records | None], list[Written]]
"""Writes a format's files into a folder: the columns, the rows and, for FHIR, each exported
participant's record (`fhir_resources.Records`)."""

TableWriter = Callable[[Path, list[Column], Iterable[Row]], Written]
"""Writes one file of rows under the columns given."""


@dataclass(frozen=True)
class Format:
    name: str
    files: tuple[str, ...]
    write: Writer
    needs_records: bool = False
    """Its writer needs every exported participant's record, asked for as the rows come."""
    table: TableWriter | None = None
    """A table of the export's own columns, in one file: a long export (`export.long`) writes
    its two tables with it."""


def _table(name: str, file_name: str, write: TableWriter, *, reshaped: bool = True) -> Format:
    """A format of rows alone, in one file: a table has no place for participants' records.
    `reshaped`: it takes the export's columns as they are, and so a long shape too."""
    return Format(name, (file_name,), lambda folder, columns, rows, records: [
        write(folder / file_name, columns, rows)], table=write if reshaped else None)  # fmt: skip


def _with_records(
    name: str,
    files: tuple[str, ...],
    write: Callable[[Path, list[Column], Iterable[Row], Records], list[Written]],
) -> Format:
    """A format that reads the participants' records beside the rows (FHIR's resources,
    MIABIS's Use & Access conditions from consent)."""

    def with_records(
        folder: Path, columns: list[Column], rows: Iterable[Row], records: Records | None
    ) -> list[Written]:
        assert records is not None  # `needs_records`
        return write(folder, columns, rows, records)

    return Format(name, files, with_records, needs_records=True)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        _table("csv", "specimens.csv", write_csv),
        _table("xlsx", "specimens.xlsx", write_xlsx),
        _table("parquet", "specimens.parquet", write_parquet),
        _with_records(
            "fhir",
            ("bundle.json",),
            lambda folder, *given: [write_fhir_bundle(folder / "bundle.json", *given)],
        ),
        _with_records(  # a table, with each participant's consent (Use & Access conditions)
            "miabis",
            ("specimens_miabis.csv",),
            lambda folder, *given: [write_miabis_csv(folder / "specimens_miabis.csv", *given)],
        ),
        _with_records("fhir-ndjson", NDJSON_FILES, write_fhir_ndjson),  # FHIR Bulk Data
    )
}
NAMES: tuple[str, ...] = tuple(FORMATS)
DEFAULT_FORMAT = "csv"


def known(name: str) -> str:
    """`name` if it is a format's, else a refusal naming those there are."""
    if name not in FORMATS:
        raise ValueError(f"{name!r} is not one of {', '.join(NAMES)}")
    return name
