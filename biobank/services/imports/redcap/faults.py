"""The faults of a REDCap import: each names the file it is in (the data dictionary, the records
or the mapping), and none shows the value of an identifier."""

from __future__ import annotations

from biobank.services.imports.common import FaultLog, ImportReport

HIDDEN = "(hidden)"  # what a fault shows of an identifier's value


def hidden(reason: str, value: object) -> str:
    """A fault's reason without the identifier value it quotes."""
    if value is None or value == "":
        return reason
    return reason.replace(repr(value), HIDDEN).replace(str(value), HIDDEN)


class Faults(FaultLog):
    """The import's fault log, told which fields are identifiers as the dictionary is read."""

    def __init__(self, report: ImportReport):
        super().__init__(report)
        self.phi: set[str] = set()  # fields whose values faults do not show

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
        quote of it) hidden."""
        if column in self.phi and value:
            value, reason = HIDDEN, hidden(reason, value)
        shown = None if value is None else str(value)
        self.add(row, line, column, shown, reason, file=file)

    def close(self) -> None:
        """The faults listed by file (the dictionary's and the mapping's first), then by line."""
        report = self.report
        report.faults.sort(key=lambda f: (f.file == report.records, f.file, f.line or 0))
        super().close()
