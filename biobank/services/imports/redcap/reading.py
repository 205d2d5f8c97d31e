"""Reading a REDCap records export: its header against the data dictionary, and each row's
cells read as its fields say, into what the row says (its participant, visit, facts, values and
consent signature) and the faults of its cells."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from biobank import redcap
from biobank.domain.phenotypes import parse_value
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import PhenotypeScope, PhenotypeType
from biobank.errors import ValidationError
from biobank.services import consent, participants
from biobank.services.imports.common import too_many_values
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import Faults, hidden
from biobank.services.imports.redcap.mapping import IDENTITY_LIMITS, ConsentMapping
from biobank.services.imports.redcap.planning import Fact, Row, Signature, Target

EVENT_COLUMN = "redcap_event_name"
REPEAT_COLUMNS = ("redcap_repeat_instrument", "redcap_repeat_instance")
IGNORED_COLUMNS = frozenset({"redcap_data_access_group", "redcap_survey_identifier"})


class RowReader:
    """The records' rows read against the dictionary, once `read_header` has placed the columns."""

    def __init__(self, dictionary: Dictionary, faults: Faults, file: str, delimiter: str):
        self.dictionary = dictionary
        self.mapping = dictionary.mapping
        self.faults = faults
        self.file = file
        self.delimiter = delimiter
        self.columns: dict[str, int] = {}

    def read_header(self, line: int, cells: list[str]) -> bool:
        """Each column's place (a column unknown or named twice is a fault, and the rows are
        still checked); False when a column the rows need is missing."""
        file = self.file
        known = {EVENT_COLUMN, *REPEAT_COLUMNS, *IGNORED_COLUMNS, *self.dictionary.skipped}
        known |= {column for f in self.dictionary.fields.values() for column in f.columns}
        for form in {f.form for f in self.dictionary.fields.values()}:
            known |= {f"{form}_complete", f"{form}_timestamp"}
        for index, cell in enumerate(cells):
            column = cell.strip().lower()
            if not column:
                continue
            if column in self.columns:
                self.faults.fault(file, None, line, column, cell, "two columns have this name")
            elif column not in known:
                self.faults.fault(
                    file, None, line, column, cell, "not a field of the data dictionary"
                )
            self.columns.setdefault(column, index)
        missing = [
            c for c in (self.mapping.record_id, EVENT_COLUMN, self.mapping.visit_date)
            if c not in self.columns
        ]  # fmt: skip
        for column in missing:
            self.faults.fault(file, None, line, column, None, f"no column {column!r}")
        return not missing

    def read_row(self, row: int, line: int, cells: list[str], width: int) -> Row:
        """Every cell of one row checked against its field; faults collected, none raised."""
        r = Row(row, line)

        def cell(column: str) -> str:
            index = self.columns.get(column)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        def read(f: redcap.Field) -> Any:
            raw = cell(f.name)
            if not raw:
                return None
            try:
                return redcap.read_cell(f, raw)
            except ValidationError as error:
                reason = error.message
                if f.name in self.faults.phi:  # it may quote the cell as read (1,5 → 1.5)
                    reason = hidden(reason, error.value)
                r.faults.append((f.name, raw, reason))
                return None

        def fact(key: str, f: redcap.Field, value: Any) -> None:
            if value is not None:
                r.facts[key] = Fact(row, line, f.name, cell(f.name), value)

        overflow = too_many_values(cells, width, self.delimiter)
        if overflow:
            r.faults.append((None, None, overflow))
        for column in REPEAT_COLUMNS:
            if cell(column):
                r.faults.append(
                    (column, cell(column), "repeating instruments and events are not imported")
                )
        r.code = self.read_code(cell(self.mapping.record_id), r)
        r.event = cell(EVENT_COLUMN)
        r.label = self.read_event(r.event, r)
        d = self.dictionary
        r.visit_date = read(d.fields[self.mapping.visit_date])
        if d.sex_field is not None:
            code = read(d.sex_field)
            fact("sex", d.sex_field, d.sexes.get(code) if code is not None else None)
        if d.birth_field is not None:
            year = read(d.birth_field)
            fact("birth_year", d.birth_field, year.year if isinstance(year, date) else year)
        for column, name in self.mapping.identity.items():
            if name in self.faults.phi:
                value = read(d.fields[name])
                fact(column, d.fields[name], self.identity_value(column, value, cell(name), r))
        for f in d.others:
            if read(f) is not None:
                fact(f"other:{f.name}", f, cell(f.name))
        for target in d.targets.values():
            self.read_value(target, cell, r)
        if d.consent is not None:
            r.signature = self.read_signature(d.consent, cell, read, r)
        return r

    def read_code(self, raw: str, r: Row) -> str | None:
        name = self.mapping.record_id
        if not raw:
            r.faults.append((name, raw, "a record ID is required"))
            return None
        code = raw.upper()
        if not participants.PARTICIPANT_CODE.match(code):
            r.faults.append((name, raw, "a participant code is 3-32 characters: A-Z, 0-9 and '-'"))
            return None
        return code

    def read_event(self, raw: str, r: Row) -> str | None:
        if not raw:
            r.faults.append((EVENT_COLUMN, raw, "an event name is required"))
            return None
        try:
            name = self.mapping.visit_labels.get(raw) or redcap.event_name(raw)
        except ValidationError as error:
            reason = error.message + " (or an event of the mapping's [visit_labels])"
            r.faults.append((EVENT_COLUMN, raw, reason))
            return None
        label = canonical_visit_label(name)
        if len(label) > 64:
            r.faults.append((EVENT_COLUMN, raw, "a visit label is 1-64 characters"))
            return None
        return label

    def identity_value(self, column: str, value: Any, raw: str, r: Row) -> Any:
        """A date of birth as a date; the other columns as written (an MRN keeps its zeros)."""
        limit = IDENTITY_LIMITS[column]
        if value is None or limit is None:
            return value
        if len(raw) > limit:
            name = self.mapping.identity[column]
            r.faults.append((name, raw, f"{name}: longer than {limit} characters"))
            return None
        return raw

    def read_value(self, target: Target, cell: Callable[[str], str], r: Row) -> None:
        f = target.field
        try:
            if f.value_type is PhenotypeType.multi_choice:
                raw = ",".join(cell(c) for c in f.columns)
                value: Any = redcap.read_checkboxes(f, {c: cell(c) for c in f.columns})
                value = [target.codes[c] for c in value] or None
            else:
                raw = cell(f.name)
                value = redcap.read_cell(f, raw) if raw else None
                if f.value_type is PhenotypeType.choice and value is not None:
                    value = target.codes[value]
            if value is None:
                return
            stored = parse_value(target.spec, value)
        except ValidationError as error:
            column = error.field if error.field in f.columns else f.name
            shown = raw if column == f.name else str(error.value)  # a checkbox's cell
            r.faults.append((column, shown, error.message))
            return
        if (target.variable or target.definition).scope is PhenotypeScope.participant:
            r.facts[f"value:{f.name}"] = Fact(r.row, r.line, f.name, raw, stored)
        else:
            r.values[f.name] = (stored, raw)

    def read_signature(
        self,
        given: ConsentMapping,
        cell: Callable[[str], str],
        read: Callable[[redcap.Field], Any],
        r: Row,
    ) -> Signature | None:
        fields, statements = self.dictionary.fields, self.dictionary.statements
        answers: dict[str, bool] = {}
        for code, name in statements.items():
            answer = read(fields[name])
            if answer is not None:
                answers[code] = answer
        version, signed_raw = cell(given.version), cell(given.signed_on)
        if not (version or signed_raw or answers):
            return None
        signed_on = read(fields[given.signed_on]) if given.signed_on in fields else None
        if not version:
            r.faults.append(
                (given.version, version, "a consent needs the version of the form signed")
            )
        elif len(version) > 32:
            r.faults.append((given.version, version, "a version is 1-32 characters"))
        if not signed_raw:
            r.faults.append((given.signed_on, signed_raw, "a consent needs the date it was signed"))
        if not version or len(version) > 32 or signed_on is None:
            return None
        version = consent.document_version(version)
        return Signature(r.row, r.line, version, signed_on, answers, statements)
