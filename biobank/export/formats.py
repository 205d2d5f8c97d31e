"""The export formats, each registered once: its name (what the CLI and the workstation offer
and what a run records), the file it writes and its writer. A new format is one line here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from biobank.export.columns import Column, Row
from biobank.export.fhir import write_fhir_bundle
from biobank.export.files import Written
from biobank.export.tabular import write_csv, write_miabis_csv, write_parquet, write_xlsx

Consents = Mapping[str, Mapping[str, str]]
"""Each exported participant's consent per statement (FHIR's Consent resources)."""

Writer = Callable[[Path, list[Column], Iterable[Row], Consents], Written]


def _table(write: Callable[[Path, list[Column], Iterable[Row]], Written]) -> Writer:
    """A writer of rows alone: a table has no place for consents."""
    return lambda path, columns, rows, consents: write(path, columns, rows)


@dataclass(frozen=True)
class Format:
    name: str
    file_name: str
    write: Writer
    needs_consents: bool = False
    """Its writer needs every exported participant's consents, known once all rows are read."""


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("csv", "specimens.csv", _table(write_csv)),
        Format("xlsx", "specimens.xlsx", _table(write_xlsx)),
        Format("parquet", "specimens.parquet", _table(write_parquet)),
        Format("fhir", "bundle.json", write_fhir_bundle, needs_consents=True),
        Format("miabis", "specimens_miabis.csv", _table(write_miabis_csv)),
    )
}
NAMES: tuple[str, ...] = tuple(FORMATS)
DEFAULT_FORMAT = "csv"


def known(name: str) -> str:
    """`name` if it is a format's, else a refusal naming those there are."""
    if name not in FORMATS:
        raise ValueError(f"{name!r} is not one of {', '.join(NAMES)}")
    return name
