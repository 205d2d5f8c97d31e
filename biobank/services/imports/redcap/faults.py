"""The faults of a REDCap import: each names the file it is in (the data dictionary, the records
or the mapping) and, in the records, the row with its record, event and repeat instance; none
shows the value of an identifier, nor a record ID that is one. The log also keeps what the
faults would leave out of an import that skips the faulty: every record with a faulty row (its
rows depend on each other: its facts, first date and signatures) and every field whose
definition is faulty."""

from __future__ import annotations

from typing import NamedTuple

from biobank.services.imports.common import FaultLog, ImportReport, LeftOutRecord

HIDDEN = "(hidden)"  # what a fault shows of an identifier's value


def hidden(reason: str, value: object) -> str:
    """A fault's reason without the identifier value it quotes."""
    if value is None or value == "":
        return reason
    return reason.replace(repr(value), HIDDEN).replace(str(value), HIDDEN)


class Place(NamedTuple):
    """A row of the records as its faults name it: the data row and the line it starts on, the
    record ID as written, the record's participant (None: the ID is not a participant code),
    the event and the repeat instance. A tuple: the scratch file keeps one with every planned
    visit, and a tuple pickles for a fraction of a dataclass's work."""

    row: int
    line: int
    record: str | None = None
    participant: str | None = None
    event: str | None = None
    instance: int | None = None


class Faults(FaultLog):
    """The import's fault log, told which fields are identifiers as the dictionary is read."""

    def __init__(self, report: ImportReport):
        super().__init__(report)
        self.phi: set[str] = set()  # fields whose values faults do not show
        self.phi_record = False  # the record ID is an identifier: faults name rows instead
        self.fields: dict[str, str] = {}  # field → its first fault not of a row
        # the faulty records: by participant, or by row for a row whose record ID is not one
        self.records: dict[str | int, LeftOutRecord] = {}

    def fault(
        self,
        file: str | None,
        row: int | None,
        line: int | None,
        column: str | None,
        value: object,
        reason: str,
    ) -> None:
        """A fault in `file`, its value as text; of an identifier, the value (and the reason's
        quote of it) hidden. One not of a row (the dictionary's, the mapping's, the records'
        header) is a fault of the field it names."""
        shown, reason = self.shown(column, value, reason)
        self.add(row, line, column, shown, reason, file=file)
        if row is None and column is not None:
            self.fields.setdefault(column, reason)

    def at(self, place: Place, column: str | None, value: object, reason: str) -> None:
        """A fault of a row of the records, which makes its record faulty."""
        shown, reason = self.shown(column, value, reason)
        record = None if self.phi_record else place.record
        self.add(
            place.row, place.line, column, shown, reason, file=self.report.records,
            record=record, event=place.event, instance=place.instance,
        )  # fmt: skip
        key = place.row if place.participant is None else place.participant
        faulty = self.records.setdefault(
            key, LeftOutRecord(record=record, rows=[], reason=f"row {place.row}: {reason}")
        )
        faulty.rows.append(place.row)

    def shown(self, column: str | None, value: object, reason: str) -> tuple[str | None, str]:
        """A fault's value as text and its reason, an identifier's value hidden in both."""
        if column in self.phi and value:
            value, reason = HIDDEN, hidden(reason, value)
        return (None if value is None else str(value)), reason

    def record_id(self, participant: str) -> str:
        """A record's ID as the reason of a fault of its own row quotes it: hidden when it is
        an identifier."""
        return HIDDEN if self.phi_record else participant

    def record_named(self, participant: str, row: int) -> str:
        """Another record, as a fault's reason names it: by its ID, or by its first row when
        the ID is an identifier."""
        return f"the record of row {row}" if self.phi_record else f"record {participant}"

    def close(self) -> None:
        """The faults listed by file (the dictionary's and the mapping's first), then by line."""
        report = self.report
        report.faults.sort(key=lambda f: (f.file == report.records, f.file, f.line or 0))
        super().close()
