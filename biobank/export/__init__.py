"""Export file writers. They know nothing of the database or of de-identification: the export
service hands them columns and already de-identified rows, and each writer streams the rows
into one file, written atomically, and reports its row count and SHA-256."""

from biobank.export.columns import Column, Kind, Role, Row
from biobank.export.fhir import write_fhir_bundle
from biobank.export.files import BATCH_ROWS, Progress, Written
from biobank.export.tabular import (
    write_csv,
    write_dictionary,
    write_miabis_csv,
    write_parquet,
    write_xlsx,
)

__all__ = [
    "BATCH_ROWS",
    "Column",
    "Kind",
    "Progress",
    "Role",
    "Row",
    "Written",
    "write_csv",
    "write_dictionary",
    "write_fhir_bundle",
    "write_miabis_csv",
    "write_parquet",
    "write_xlsx",
]
