"""Reading a REDCap records export: its header against the data dictionary (a classic project's
has no event column), and each row's cells read as its fields say, into what the row says (its
participant, visit, facts, values and consent signature) and the faults of its cells. Which
visit a row is, and which fields a repeating instrument's row holds: `visits`.

A phenotype field's cell holds a value, a missing-data code (the mapping's `missing_codes`,
whatever the field's type, a choice field's own code first; a checkbox's in its extra
`field___code` column, as REDCap exports it), or nothing. Blank in a row that holds the field's
form, it says the value is gone (`Row.blank`: re-importing is a sync). A repeating
instrument's row holds its form only; any other row holds a form when its `<form>_complete`
or `<form>_timestamp` cell is filled (REDCap fills them in the rows of the events that have
the form and leaves them blank in the others) or one of the form's fields is (a checkbox
ticked: some exports write 0 in every row). The project's form-event mapping is not read:
these cells say the same of the rows the file has."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from operator import itemgetter
from typing import Any

from biobank import redcap
from biobank.domain.phenotypes import parse_value
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import PhenotypeType
from biobank.errors import ValidationError
from biobank.services import consent, external_ids
from biobank.services.imports.common import too_many_values
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import Faults, hidden
from biobank.services.imports.redcap.mapping import IDENTITY_LIMITS, ConsentMapping
from biobank.services.imports.redcap.planning import Fact, Given, Missing, Row, Signature, Target
from biobank.services.imports.redcap.visits import row_visit
from biobank.stored_text import check_text

EVENT_COLUMN = "redcap_event_name"
INSTRUMENT_COLUMN = "redcap_repeat_instrument"
INSTANCE_COLUMN = "redcap_repeat_instance"
# known, and not imported: the data access group and the survey columns
IGNORED_COLUMNS = frozenset({"redcap_data_access_group", "redcap_survey_identifier"})


SEEN_LIMIT = 4096  # the cells a field's reader remembers (a free text's are never all alike)
# what a field's cells give: a value or missing-data code (None: blank), the cell as written,
# or its fault (the column, the cell shown, the reason)
Read = tuple[Given | None, str, tuple[str | None, str | None, str] | None]


class ValueReader:
    """One field's reading, built once from its type and choices: its columns (a checkbox's
    own, then its missing-data code columns), taken from a row's cells in one call, and what
    cells read before gave, for a value read alike in every row (not a date's: "in the
    future" moves with the day)."""

    def __init__(
        self, target: Target, missing: dict[str, str] | None, places: dict[str, int], blank: int
    ):
        f = target.field
        self.checkbox = f.value_type is PhenotypeType.multi_choice
        self.missing = missing or {}
        if self.checkbox:
            self.own: frozenset[str] | tuple[str, ...] = f.columns
            self.columns = (*f.columns, *self.missing)
        else:  # a choice's own codes, read before the missing-data codes
            choice = f.value_type is PhenotypeType.choice
            self.own = frozenset(code for code, _ in f.choices if choice)
            self.columns = (f.name,)
        # each column's place in a row's stripped cells (a column the file lacks: `blank`, the
        # place past the header's, always blank); one column's cell is taken as it is, else a
        # tuple of them
        self.take = itemgetter(*(places.get(column, blank) for column in self.columns))
        self.participant_level = target.participant_level
        self.lasting = PhenotypeType.date not in (f.value_type, target.spec.value_type)
        self.seen: dict[str | tuple[str, ...], Read] = {}  # by the cells `take` gives


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
        self.event_dates: dict[str, redcap.Field] = {}  # event → its own visit date field
        # a checkbox's missing-data code columns (column → code), as REDCap exports them
        self.missing_columns: dict[str, dict[str, str]] = {}
        # form → the columns (and whether a checkbox's) whose filled cell says a row holds it
        self.form_columns: dict[str, list[tuple[int, bool]]] = {}
        self.readers: dict[str, ValueReader] = {}  # field → its reader, built at its first cell

    def read_header(self, line: int, cells: list[str]) -> bool:
        """Each column's place (a column unknown or named twice is a fault, and the rows are
        still checked); False when a column the rows need is missing."""
        file = self.file
        known = {EVENT_COLUMN, INSTRUMENT_COLUMN, INSTANCE_COLUMN, *IGNORED_COLUMNS}
        known |= self.dictionary.skipped
        known |= {column for f in self.dictionary.fields.values() for column in f.columns}
        for form in self.dictionary.forms:
            known |= {f"{form}_complete", f"{form}_timestamp"}
        for f in self.dictionary.fields.values():
            if f.value_type is PhenotypeType.multi_choice:
                own = {code for code, _ in f.choices}
                self.missing_columns[f.name] = {
                    redcap.checkbox_column(f.name, code): code
                    for code in self.mapping.missing_codes
                    if code not in own
                }
                known |= self.missing_columns[f.name].keys()
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
        self.forms = self.dictionary.forms  # a skipped form's too
        self.form_columns = self.read_form_columns()
        date_field = self.dictionary.visit_date_field
        self.event_dates = self.read_event_dates()
        dates = [f.name for f in (date_field, *self.event_dates.values()) if f is not None]
        needed = [self.mapping.record_id, *dict.fromkeys(dates)]
        missing = [c for c in needed if c not in self.columns]
        for column in missing:
            self.faults.fault(file, None, line, column, None, f"no column {column!r}")
        if date_field is None and self.longitudinal and self.mapping.visit_date is not None:
            name = self.mapping.visit_date
            if name not in self.dictionary.fields:  # else its type is at fault already
                reason = f"no field {name!r} in the data dictionary"
                self.faults.fault(self.mapping.file, None, None, "visit_date", name, reason)
            return False
        return not missing

    def read_form_columns(self) -> dict[str, list[tuple[int, bool]]]:
        """Each form's columns whose filled cell says a row holds the form (its status, survey
        timestamp and fields, but the record ID, which every row fills)."""
        found: dict[str, list[tuple[int, bool]]] = {}
        for form in self.forms:
            signs = [f"{form}_complete", f"{form}_timestamp"]
            found[form] = [(self.columns[c], False) for c in signs if c in self.columns]
        for f in self.dictionary.fields.values():
            if f.name != self.mapping.record_id:
                checkbox = f.value_type is PhenotypeType.multi_choice
                found[f.form] += [
                    (self.columns[c], checkbox) for c in f.columns if c in self.columns
                ]
        return found

    def holds(self, form: str, cells: list[str]) -> bool:
        """Whether a row that is not a repeating instrument's holds `form` (see above)."""
        for index, checkbox in self.form_columns[form]:
            filled = cells[index].strip() if index < len(cells) else ""
            if filled == "1" or (filled and not checkbox):
                return True
        return False

    def read_event_dates(self) -> dict[str, redcap.Field]:
        """The mapping's `[event_dates]`: each event's visit date field, if it is a date."""
        found = {}
        for event, name in self.mapping.event_dates.items():
            key = f"event_dates.{event}"
            f = self.dictionary.role_field(name, key, PhenotypeType.date, required=True)
            if f is not None:
                found[event] = f
        return found

    def date_field(self, r: Row) -> redcap.Field | None:
        """The field that dates the visit of a row's event, if the mapping names one."""
        return self.event_dates.get(r.event, self.dictionary.visit_date_field)

    def read_row(self, row: int, line: int, cells: list[str], width: int) -> Row:
        """Every cell of one row checked against its field; faults collected, none raised."""
        r = Row(row, line)
        # the header's cells stripped, and a blank one past them (`ValueReader`)
        stripped = [cell.strip() for cell in cells[:width]]
        stripped += [""] * (width + 1 - len(stripped))

        def cell(column: str) -> str:
            index = self.columns.get(column)
            return stripped[index] if index is not None else ""

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

        holding: dict[str, bool] = {}

        def holds(form: str) -> bool:
            """Whether the row holds `form`: its blank cells say a value is gone."""
            if r.form is not None:
                return form == r.form
            if form not in holding:
                holding[form] = self.holds(form, cells)
            return holding[form]

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
                self.read_value(target, stripped, r, holds)
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
        if form in self.dictionary.skipped_forms:
            return  # a row of a form the mapping skips: no visit, nothing read
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
        observed = form is not None and self.mapping.observed(form)
        visit = row_visit(base, form=form, instance=instance, observed=observed)
        if len(visit.label) > 64:
            column = INSTRUMENT_COLUMN if form else INSTANCE_COLUMN
            r.faults.append(
                (column, cell(column), f"the visit {visit.label!r} is over 64 characters")
            )
            return
        r.label, r.base, r.form, r.instance = visit.label, visit.base, visit.form, visit.instance

    def read_visit_date(
        self,
        held: Callable[[redcap.Field], bool],
        read: Callable[[redcap.Field], Any],
        cell: Callable[[str], str],
        r: Row,
    ) -> date | None:
        """The mapping's visit date (the event's own, or the project's); in a repeating
        instrument's row, its form's first date filled (none: its event's visit date); in a
        project without a visit date field, the row's first date filled (told in a notice;
        none: the record's first date, `checking`)."""
        d = self.dictionary
        given = self.date_field(r)
        if r.form is None and given is not None:
            day = read(given)
            return day if isinstance(day, date) else None

        def quietly(f: redcap.Field) -> Any:
            """A variable's date, its fault left to its own reading."""
            try:
                return redcap.read_cell(f, cell(f.name)) if cell(f.name) else None
            except ValidationError:
                return None

        for f in d.fields.values():
            if f.value_type is PhenotypeType.date and held(f) and self.may_date(f):
                day = read(f) if f is given else quietly(f)
                if isinstance(day, date):
                    if r.form is None and f.name not in self.dated_by:
                        self.dated_by.add(f.name)
                        named = self.mapping.visit_date
                        why = f"no field {named!r} in the data dictionary" if named else ""
                        self.faults.report.notices.append(
                            f"visits dated by {f.name}, the first date filled "
                            f"({why or 'the mapping names no visit date field'})"
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
            if arm in self.mapping.arms:  # the arm's own visits: "baseline extension"
                name = f"{name} {self.mapping.arms[arm]}"
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

    def read_value(
        self,
        target: Target,
        stripped: list[str],
        r: Row,
        holds: Callable[[str], bool],
    ) -> None:
        """A field's value, its missing-data code, or (in a row holding its form) its blank,
        from the row's `stripped` cells (`read_row`)."""
        f = target.field
        reader = self.readers.get(f.name)
        if reader is None:
            missing = self.missing_columns.get(f.name)
            blank = len(stripped) - 1
            reader = self.readers[f.name] = ValueReader(target, missing, self.columns, blank)
        taken = reader.take(stripped)
        read = reader.seen.get(taken)
        if read is None:
            given_cells = taken if isinstance(taken, tuple) else (taken,)
            read = self.typed_value(target, reader, given_cells)
            if reader.lasting and len(reader.seen) < SEEN_LIMIT:
                reader.seen[taken] = read
        given, raw, fault = read
        if fault is not None:
            r.faults.append(fault)
        elif given is None:
            if holds(f.form):
                r.blank.append(f.name)
        elif reader.participant_level:
            r.facts[f"value:{f.name}"] = Fact(r.row, r.line, f.name, raw, given)
        else:
            r.values[f.name] = (given, raw)

    def typed_value(self, target: Target, reader: ValueReader, cells: tuple[str, ...]) -> Read:
        """What a field's cells (`ValueReader.columns`) give: a value or missing-data code (or
        None) and the cell as written, or the fault."""
        f = target.field
        given: Given | None = None
        try:
            if reader.checkbox:
                ticks = dict(zip(reader.columns, cells, strict=True))
                raw = ",".join(cells[: len(reader.own)])
                value: Any = redcap.read_checkboxes(f, ticks)
                value = list(dict.fromkeys(target.codes[c] for c in value)) or None
                given = self.checkbox_missing(
                    f, reader.missing, ticks.__getitem__, ticked=bool(value)
                )
            else:
                raw = cells[0]
                if raw in self.mapping.missing_codes and raw not in reader.own:
                    given = Missing(raw)
                value = redcap.read_cell(f, raw) if raw and given is None else None
                if f.value_type is PhenotypeType.choice and value is not None:
                    value = target.codes[value]
            if value is not None:
                given = parse_value(target.spec, value)
        except ValidationError as error:
            checkbox = reader.checkbox and (
                error.field in reader.own or error.field in reader.missing
            )
            column = error.field if checkbox else f.name
            shown = raw if column == f.name else str(error.value)  # a checkbox's cell
            return None, raw, (column, shown, error.message)
        return given, raw, None

    @staticmethod
    def checkbox_missing(
        f: redcap.Field, columns: dict[str, str], cell: Callable[[str], str], *, ticked: bool
    ) -> Missing | None:
        """A checkbox's missing-data code: its column ticked, alone."""
        found: Missing | None = None
        for column, code in columns.items():
            raw = cell(column)
            if raw not in ("", "0", "1"):
                raise ValidationError(
                    f"{column}: {raw!r} is not 1 (ticked) or 0", field=column, value=raw
                )
            if raw == "1":
                if ticked or found is not None:
                    reason = f"{f.name}: the missing-data code {code} is ticked with another box"
                    raise ValidationError(reason, field=column, value=raw)
                found = Missing(code)
        return found

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
        else:
            try:  # as the document's version will be stored: 1-32 characters, no control one
                check_text(given.version, version, 32)
            except ValidationError as error:
                r.faults.append((given.version, version, error.message))
                version = ""
        if not signed_raw:
            r.faults.append((given.signed_on, signed_raw, "a consent needs the date it was signed"))
        if not version or signed_on is None:
            return None
        version = consent.document_version(version)
        return Signature(r.row, r.line, version, signed_on, answers, statements)
