"""What every importer shares: the report it gives (faults, notices, counts), the log its faults
go through, the batches it reads and writes in, the scratch file it remembers them in, and the
refusal to write a plan whose check found a fault."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from biobank.errors import ValidationError
from biobank.tabular import chunks

MAX_LISTED_FAULTS = 1000
BATCH_ROWS = 1000

T = TypeVar("T")

DataRow = tuple[int, tuple[int, list[str]]]  # (row, (line, cells)): rows count from 1


def batches(items: Iterable[T]) -> Iterator[list[T]]:
    """`items` BATCH_ROWS at a time: rows are looked up, checked and written a batch at once."""
    return chunks(items, BATCH_ROWS)


class ScratchFile:
    """What a check must remember of every row read so far, kept in a private temporary SQLite
    file rather than in memory, so that a file of a million rows is checked and written in the
    memory of a few batches; each importer keeps its own tables in it (`schema`)."""

    def __init__(self, schema: str = "") -> None:
        # "": a temporary file, deleted when closed; a plan may be checked in one worker
        # thread and written in another (never by two at once)
        self.file = sqlite3.connect("", check_same_thread=False)
        # KiB: lookups go by key, the OS caches the file
        self.file.executescript("PRAGMA cache_size = -256;" + schema)

    def where_in(self, query: str, values: Iterable[Any]) -> list[tuple[Any, ...]]:
        """`query` with `{marks}` for the placeholders of one batch of `values`, run for each."""
        found: list[tuple[Any, ...]] = []
        for chunk in batches(values):
            marks = ", ".join("?" * len(chunk))
            found += self.file.execute(query.format(marks=marks), chunk).fetchall()
        return found

    def close(self) -> None:
        self.file.close()


def stored_id(row_id: int | None) -> int:
    """The id of a row found in the database or written to it: SQLModel types every id as
    optional, since a row has none until it is written."""
    if row_id is None:
        raise ValueError("the row is not written yet")
    return row_id


def too_many_values(cells: list[str], width: int, delimiter: str) -> str | None:
    """The fault of a row with values beyond the header's columns, if it has any."""
    if not any(cell.strip() for cell in cells[width:]):
        return None
    if not delimiter:  # a workbook's row: cells past the header's last
        return f"{len(cells)} values for {width} columns: a value beyond the header's last column"
    return (
        f"{len(cells)} values for {width} columns (quote values holding the delimiter "
        f"{delimiter!r})"
    )


class _OwnParts(BaseModel):
    """A model with parts only one importer fills: left None by the others, they are left out
    of what the model writes (its JSON), so each importer's report reads as its own."""

    OWN: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _without_unused_parts(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        written = handler(self)
        return {k: v for k, v in written.items() if not (v is None and k in self.OWN)}


class Fault(_OwnParts):
    """One thing wrong. `row` counts a file's data rows from 1 (the header and blank lines do
    not count); `line` is the line of the file the row starts on. No row: the file as a whole.
    `column` names the column (REDCap: the field); `file`, where an import reads several, the
    file; `record`, `event` and `instance`, REDCap's record (None when its ID is PHI: the row
    stands in), event and repeat instance of the row."""

    OWN: ClassVar[frozenset[str]] = frozenset({"file", "record", "event", "instance"})

    row: int | None
    line: int | None
    column: str | None
    value: str | None
    reason: str
    file: str | None = None
    record: str | None = None
    event: str | None = None
    instance: int | None = None


class LeftOutRecord(BaseModel):
    """A record an import left out, as it is in the file: its ID (None when it is PHI or
    unreadable: its rows say which), every row of it, and why (its first fault)."""

    record: str | None
    rows: list[int]
    reason: str


class LeftOut(BaseModel):
    """What an import that skips the faulty leaves out: the records with a faulty row (the
    first MAX_LISTED_FAULTS listed) and the fields whose definition is faulty (field → why)."""

    records: int = 0
    rows: int = 0
    listed: list[LeftOutRecord] = []
    fields: dict[str, str] = {}


class Removed(BaseModel):
    """A value an import removes, its cell blank in the source now: the row (REDCap: the
    record's first row, for a participant-level value every row holding it blank), its record
    (None when the ID is PHI), event and repeat instance, the field and what is stored."""

    row: int
    record: str | None
    event: str | None
    instance: int | None
    field: str
    value: str


class Counts(BaseModel):
    """What an import adds, changes and leaves as it is, of one kind of record."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0  # blank in the source now
    withdrawn: int = 0  # consent statements whose answer turned from yes to no

    def count(self, outcome: str, times: int = 1) -> None:
        setattr(self, outcome, getattr(self, outcome) + times)


class InferredMapping(BaseModel):
    """What a REDCap import given no mapping made of the project: the mapping it took (one
    `inferred`, or the shipped `lupus` one when the dictionary has every field that names),
    its settings as a mapping file holds them, why each was inferred so (setting, or
    `table.key` → why), what could not be (→ why not), and each event's visit label."""

    mapping: str
    settings: dict[str, Any] = {}
    why: dict[str, str] = {}
    not_inferred: dict[str, str] = {}
    visits: dict[str, str] = {}


class ImportReport(_OwnParts):
    """What checking a file found and writing it did: every fault (the first MAX_LISTED_FAULTS
    listed), the notices, and what the import adds. The parts of one importer (a legacy sheet's
    `file` and `new_…` counts; REDCap's two files and its `Counts`) stay None in the other's."""

    OWN: ClassVar[frozenset[str]] = frozenset(
        {"file", "dictionary", "records", "fields", "new_participants", "new_visits",
         "new_units", "imported", "participants", "identities", "visits", "variables",
         "values", "consents", "documents", "left_out", "inferred",
         "removed"}
    )  # fmt: skip

    file: str | None = None  # a legacy sheet
    dictionary: str | None = None  # REDCap's data dictionary and records export
    records: str | None = None
    study: str
    encoding: str
    delimiter: str
    fields: int | None = None  # of the data dictionary
    rows: int = 0
    faulty_rows: int = 0
    fault_count: int = 0
    faults: list[Fault] = []  # the first MAX_LISTED_FAULTS
    notices: list[str] = []
    new_participants: int | None = None  # a legacy sheet creates participants, visits, units
    new_visits: int | None = None
    new_units: int | None = None
    imported: int | None = None  # specimens
    participants: Counts | None = None  # REDCap adds, changes or leaves each of these
    identities: Counts | None = None
    visits: Counts | None = None
    variables: Counts | None = None  # added, or matched (unchanged)
    values: Counts | None = None
    consents: Counts | None = None
    documents: list[str] | None = None  # consent document versions created, "CODE version"
    left_out: LeftOut | None = None  # REDCap with --skip-faulty
    removed: list[Removed] | None = None  # REDCap: the first MAX_LISTED_FAULTS values removed
    inferred: InferredMapping | None = None  # REDCap without a mapping


class FaultLog:
    """Where a check's faults go: each is counted, the first MAX_LISTED_FAULTS are listed in the
    report, and the rows they fall on are counted once each, in whatever order they come (one
    bit a row: a sheet of a million faulty rows costs 125 kB)."""

    def __init__(self, report: ImportReport):
        self.report = report
        self.faulty = bytearray()  # bit `row`: the row has a fault

    def add(
        self,
        row: int | None,
        line: int | None,
        column: str | None,
        value: str | None,
        reason: str,
        *,
        file: str | None = None,
        record: str | None = None,
        event: str | None = None,
        instance: int | None = None,
    ) -> None:
        report = self.report
        report.fault_count += 1
        if row is not None:
            byte, bit = divmod(row, 8)
            if byte >= len(self.faulty):
                self.faulty.extend(bytes(byte + 1 - len(self.faulty)))
            if not self.faulty[byte] >> bit & 1:
                self.faulty[byte] |= 1 << bit
                report.faulty_rows += 1
        if len(report.faults) < MAX_LISTED_FAULTS:
            report.faults.append(
                Fault(
                    row=row, line=line, column=column, value=value, reason=reason, file=file,
                    record=record, event=event, instance=instance,
                )
            )  # fmt: skip

    def close(self) -> None:
        """Say so when not every fault is listed."""
        report = self.report
        if report.fault_count > len(report.faults):
            report.notices.append(f"{len(report.faults)} of {report.fault_count} faults listed")


def refuse_a_faulty_plan(report: ImportReport) -> None:
    """An importer writes only a plan whose check found nothing wrong."""
    if report.fault_count:
        file = report.file or report.records  # a legacy sheet; REDCap's records
        raise ValidationError(
            f"{file} has {report.fault_count} faults in {report.faulty_rows} rows; nothing was "
            "imported",
            field="file",
            value=file,
        )
