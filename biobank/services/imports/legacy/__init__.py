"""Importing the spreadsheet a lab kept before this system: one row per tube, with its subject,
visit, type, volume, collection and processing times, freezer, rack, box and position.

Checking (`checking`) reads the whole file (`reading`) and reports every fault (data row, file
line, column, value, reason) before anything is written, so a file with any faulty row changes
nothing. It looks rows up in the database a thousand at a time, spools the checked rows to a
temporary file and keeps what it must remember of every row (the legacy IDs seen, the
participants and visits named) in a private temporary SQLite file (`planning`), so its memory
does not grow with the sheet. Writing (`writing`) then goes in bulk (`db.insert_many`), a
thousand rows at a time: specimens, their custody events and their hash-chained audit entries,
with the participants, visits and storage units the file names created when missing, all in
the caller's one transaction.
"""

from biobank.services.imports.legacy.checking import check_inventory
from biobank.services.imports.legacy.planning import ImportPlan
from biobank.services.imports.legacy.reading import FIELDS, SheetFormat, sheet_format
from biobank.services.imports.legacy.writing import write_inventory

__all__ = [
    "FIELDS",
    "ImportPlan",
    "SheetFormat",
    "check_inventory",
    "sheet_format",
    "write_inventory",
]
