"""Reading a REDCap records export: its header against the data dictionary (a classic project's
has no event column), and each row's cells read as its fields say, into what the row says (its
participant, visit, facts, values and consent signature) and the faults of its cells. Which
visit a row is, and which fields a repeating instrument's row holds: `visits`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from biobank import redcap
from biobank.domain.phenotypes import parse_value
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import PhenotypeScope, PhenotypeType
from biobank.errors import ValidationError
from biobank.services import consent, external_ids
from biobank.services.imports.common import too_many_values
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import Faults, hidden
from biobank.services.imports.redcap.mapping import IDENTITY_LIMITS, ConsentMapping
from biobank.services.imports.redcap.planning import Fact, Row, Signature, Target
from biobank.services.imports.redcap.visits import row_visit

EVENT_COLUMN = "redcap_event_name"
INSTRUMENT_COLUMN = "redcap_repeat_instrument"
INSTANCE_COLUMN = "redcap_repeat_instance"
# known, and not imported: the data access group and the survey columns
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
        self.longitudinal = True  # the records have an event column
        self.forms: set[str] = set()  # the dictionary's, once it is read
        # the file's first event, and whether it has an arm (REDCap gives every event one)
        self.first_event: tuple[str, bool] | None = None
        self.dated_by: set[str] = set()  # the date fields a classic project's visits took

    def read_header(self, line: int, cells: list[str]) -> bool:
        """Each column's place (a column unknown or named twice is a fault, and the rows are
        still checked); False when a column the rows need is missing."""
        file = self.file
        known = {EVENT_COLUMN, INSTRUMENT_COLUMN, INSTANCE_COLUMN, *IGNORED_COLUMNS}
        known |= self.dictionary.skipped
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
        self.longitudinal = EVENT_COLUMN in self.columns
        self.forms = {f.form for f in self.dictionary.fields.values()}
        date_field = self.dictionary.visit_date_field
        needed = [self.mapping.record_id] + ([date_field.name] if date_field else [])
        missing = [c for c in needed if c not in self.columns]
        for column in missing:
            self.faults.fault(file, None, line, column, None, f"no column {column!r}")
        if date_field is None and self.longitudinal:  # each event's date is needed
            name = self.mapping.visit_date
            if name not in self.dictionary.fields:  # else its type is at fault already
                reason = f"no field {name!r} in the data dictionary"
                self.faults.fault(self.mapping.file, None, None, "visit_date", name, reason)
            return False
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
        r.code = self.read_record_id(cell(self.mapping.record_id), r)
        self.read_visit(cell, r)
        d = self.dictionary

        def held(f: redcap.Field) -> bool:
            """A field this row holds: any, but in a repeating instrument's row its form's."""
            return r.form is None or f.form == r.form

        r.visit_date = self.read_visit_date(held, read, cell, r)
        if d.sex_field is not None and held(d.sex_field):
            code = read(d.sex_field)
            fact("sex", d.sex_field, d.sexes.get(code) if code is not None else None)
        if d.birth_field is not None and held(d.birth_field):
            year = read(d.birth_field)
            fact("birth_year", d.birth_field, year.year if isinstance(year, date) else year)
        for column, name in self.mapping.identity.items():
            if name in self.faults.phi and held(d.fields[name]):
                value = read(d.fields[name])
                fact(column, d.fields[name], self.identity_value(column, value, cell(name), r))
        for f in d.others:
            if held(f) and read(f) is not None:
                fact(f"other:{f.name}", f, cell(f.name))
        for target in d.targets.values():
            if held(target.field):
                self.read_value(target, cell, r)
        version = d.fields.get(d.consent.version) if d.consent is not None else None
        if d.consent is not None and (r.form is None or (version and held(version))):
            r.signature = self.read_signature(d.consent, cell, read, r)
        return r

    def read_visit(self, cell: Callable[[str], str], r: Row) -> None:
        """The row's event, repeating instrument and instance, and so its visit (`visits`)."""
        if self.longitudinal:
            r.event = cell(EVENT_COLUMN)
            base = self.read_event(r.event, r)
        else:
            base = self.mapping.classic_label
        form = cell(INSTRUMENT_COLUMN).lower() or None
        if form is not None and form not in self.forms:
            r.faults.append((INSTRUMENT_COLUMN, form, "not a form of the data dictionary"))
            return
        raw = cell(INSTANCE_COLUMN)
        instance = int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else None
        if raw and instance is None:
            r.faults.append((INSTANCE_COLUMN, raw, "a repeat instance is a whole number from 1"))
            return
        if form is not None and instance is None:
            r.faults.append(
                (INSTANCE_COLUMN, raw, "a repeating instrument's row needs its instance")
            )
            return
        if base is None:
            return
        visit = row_visit(base, form=form, instance=instance)
        if len(visit.label) > 64:
            column = INSTRUMENT_COLUMN if form else INSTANCE_COLUMN
            r.faults.append(
                (column, cell(column), f"the visit {visit.label!r} is over 64 characters")
            )
            return
        r.label, r.base, r.form = visit.label, visit.base, visit.form

    def read_visit_date(
        self,
        held: Callable[[redcap.Field], bool],
        read: Callable[[redcap.Field], Any],
        cell: Callable[[str], str],
        r: Row,
    ) -> date | None:
        """The mapping's visit date; in a repeating instrument's row, its form's first date
        filled (none: its event's visit date); in a classic project without a visit date
        field, the row's first date filled (told in a notice)."""
        d = self.dictionary
        if r.form is None and d.visit_date_field is not None:
            day = read(d.visit_date_field)
            return day if isinstance(day, date) else None

        def quietly(f: redcap.Field) -> Any:
            """A variable's date, its fault left to its own reading."""
            try:
                return redcap.read_cell(f, cell(f.name)) if cell(f.name) else None
            except ValidationError:
                return None

        for f in d.fields.values():
            if f.value_type is PhenotypeType.date and held(f) and self.may_date(f):
                day = read(f) if f is d.visit_date_field else quietly(f)
                if isinstance(day, date):
                    if r.form is None and f.name not in self.dated_by:
                        self.dated_by.add(f.name)
                        self.faults.report.notices.append(
                            f"visits dated by {f.name}, the first date filled (no field "
                            f"{self.mapping.visit_date!r} in the data dictionary)"
                        )
                    return day
        return None

    def may_date(self, f: redcap.Field) -> bool:
        """A date field that may date a visit: not an identifier (a date of birth) nor the
        birth year's."""
        d = self.dictionary
        return not f.identifier and f.name not in self.faults.phi and f is not d.birth_field

    def read_record_id(self, raw: str, r: Row) -> str | None:
        """The record ID as REDCap writes it (`1` is not `01`, `a` is not `A`)."""
        name = self.mapping.record_id
        if not raw:
            r.faults.append((name, raw, "a record ID is required"))
            return None
        if len(raw) > external_ids.MAX_LENGTH:
            r.faults.append((name, raw, f"a record ID is 1-{external_ids.MAX_LENGTH} characters"))
            return None
        return raw

    def read_event(self, raw: str, r: Row) -> str | None:
        """The visit label of an event: the mapping's, else the unique event name without its
        arm (a name without one taken as written, when the file's first event has none)."""
        if not raw:
            r.faults.append((EVENT_COLUMN, raw, "an event name is required"))
            return None
        name = self.mapping.visit_labels.get(raw)
        if name is None:
            name, arm = redcap.split_event(raw)
            if self.first_event is None:
                self.first_event = (raw, arm is not None)
            first, arms = self.first_event
            if (arm is not None) != arms:
                reason = (
                    f"{raw!r} is not a REDCap event name like {first} (a file's events all "
                    "end in _arm_N, or none does; or name it in the mapping's [visit_labels])"
                )
                r.faults.append((EVENT_COLUMN, raw, reason))
                return None
        label = canonical_visit_label(name)
        if not label or len(label) > 64:
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
