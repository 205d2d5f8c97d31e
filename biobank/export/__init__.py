"""Export file writers. They know nothing of the database or of de-identification: the export
service hands them columns and already de-identified rows (and, for FHIR and MIABIS, the
participants' records), and each writer streams them into its files (one table, or FHIR Bulk
Data's file per resource type), written atomically, reporting each one's rows and SHA-256."""

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
