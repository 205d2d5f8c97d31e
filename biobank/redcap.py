"""A REDCap project as this system reads it: the data dictionary (the standard 18 columns) and
the cells of a "raw" records export, checked against each field's type, range and choices.

Pure: it reads the rows it is handed and knows nothing of the database; the import service
(`services.imports.redcap`) decides what each field becomes.

Field types map onto phenotype types: text with validation integer → integer, number (and
number_Ndp) → decimal, date_* → date, datetime_* and datetime_seconds_* → date with the time
dropped (raw exports write YYYY-MM-DD [HH:MM[:SS]] whatever the entry format), time, email and
the other validations and notes → text; radio and dropdown → choice; checkbox → multi_choice
(exported as one `field___code` column of 1/0 per choice); yesno and truefalse → boolean;
calc → decimal; slider → integer 0-100. Descriptive and file fields hold no value.

A dictionary is read as REDCap writes it: the 18 headers of a CSV download, or the snake_case
keys of the API's metadata export.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from biobank.domain.phenotypes import Spec, parse_value, typed
from biobank.domain.vocabulary import PhenotypeType
from biobank.errors import ValidationError
from biobank.html_text import plain_text

COLUMNS: dict[str, str] = {
    "name": "Variable / Field Name",
    "form": "Form Name",
    "field_type": "Field Type",
    "label": "Field Label",
    "choices": "Choices, Calculations, OR Slider Labels",
    "note": "Field Note",
    "validation": "Text Validation Type OR Show Slider Number",
    "min": "Text Validation Min",
    "max": "Text Validation Max",
    "identifier": "Identifier?",
}
"""What is read → its header in a data dictionary (the other columns steer data entry)."""
METADATA_KEYS: dict[str, str] = {
    "name": "field_name",
    "form": "form_name",
    "field_type": "field_type",
    "label": "field_label",
    "choices": "select_choices_or_calculations",
    "note": "field_note",
    "validation": "text_validation_type_or_show_slider_number",
    "min": "text_validation_min",
    "max": "text_validation_max",
    "identifier": "identifier",
}
"""What is read → its key in the API's metadata export (`content=metadata`)."""

SKIPPED_TYPES = frozenset({"descriptive", "file"})
CHOICE_TYPES = {"radio": PhenotypeType.choice, "dropdown": PhenotypeType.choice}
FIXED_TYPES = {
    "checkbox": PhenotypeType.multi_choice,
    "yesno": PhenotypeType.boolean,
    "truefalse": PhenotypeType.boolean,
    "calc": PhenotypeType.decimal,
    "slider": PhenotypeType.integer,
    "notes": PhenotypeType.text,
    "sql": PhenotypeType.text,  # a dropdown filled by a query: its stored keys, as text
}
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
FIELD_NAME_LIMIT = 100  # REDCap's own
EVENT_NAME = re.compile(r"^([a-z0-9][a-z0-9_]*?)_arm_(\d+)$")
NUMBER_VALIDATION = re.compile(r"^number(_\d+dp)?(_comma_decimal)?$")
DATE_VALIDATION = re.compile(r"^(date|datetime|datetime_seconds)_(ymd|mdy|dmy)$")
TEXT_VALIDATIONS = frozenset(
    {
        "alpha_only",
        "email",
        "mrn_10d",
        "mrn_generic",
        "phone",
        "phone_australia",
        "phone_france",
        "postalcode_australia",
        "postalcode_canada",
        "postalcode_french",
        "postalcode_germany",
        "postalcode_uk",
        "ssn",
        "time",
        "time_hh_mm_ss",
        "time_mm_ss",
        "vmrn",
        "zipcode",
    }
)
"""REDCap's built-in validations whose values are kept as written (times among them)."""
DATETIME_LAYOUTS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
SLIDER_RANGE = (0.0, 100.0)
RANGED_TYPES = (PhenotypeType.integer, PhenotypeType.decimal, PhenotypeType.date)
LABEL_LIMIT = 300


@dataclass(frozen=True)
class Field:
    """One variable of the dictionary, as far as its values go."""

    name: str
    form: str
    field_type: str
    label: str
    value_type: PhenotypeType
    line: int
    choices: tuple[tuple[str, str], ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    earliest: date | None = None  # a date field's Text Validation Min
    latest: date | None = None
    comma_decimal: bool = False
    identifier: bool = False
    note: str | None = None
    validation: str = ""  # a text field's Text Validation Type

    @property
    def drops_time(self) -> bool:
        """A datetime field, read as its date."""
        return self.validation.startswith("datetime_")

    @property
    def custom_validation(self) -> bool:
        """A validation none of REDCap's own: a site's addition, read as text."""
        return self.value_type is PhenotypeType.text and self.validation not in (
            "",
            *TEXT_VALIDATIONS,
        )

    @property
    def spec(self) -> Spec:
        return Spec(
            name=self.name,
            value_type=self.value_type,
            min_value=self.min_value,
            max_value=self.max_value,
            choices=self.choices,
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """The records export's columns of this field."""
        if self.value_type is PhenotypeType.multi_choice:
            return tuple(checkbox_column(self.name, code) for code, _ in self.choices)
        return (self.name,)


@dataclass(frozen=True)
class Problem:
    """A fault of the dictionary: its line, the field (for the header: the column) and the
    value at fault; the reason names the dictionary's column."""

    line: int | None
    field: str | None
    value: str | None
    reason: str


@dataclass
class Dictionary:
    fields: dict[str, Field] = field(default_factory=dict)  # in the dictionary's order
    skipped: list[str] = field(default_factory=list)  # descriptive and file fields
    faulty: list[str] = field(default_factory=list)  # fields with a problem
    problems: list[Problem] = field(default_factory=list)

    @property
    def forms(self) -> set[str]:
        return {f.form for f in self.fields.values()}

    @property
    def times_dropped(self) -> list[str]:
        """The datetime fields, whose values are read as their date."""
        return [f.name for f in self.fields.values() if f.drops_time]

    @property
    def custom_validations(self) -> list[str]:
        """Fields with a site's own validation, read as text: `field (validation)`."""
        return [f"{f.name} ({f.validation})" for f in self.fields.values() if f.custom_validation]


def checkbox_column(name: str, code: str) -> str:
    """REDCap's export column of one checkbox choice: `field___code`, the code lower-cased
    and anything but letters, digits and '_' written as '_'."""
    return f"{name}___{re.sub(r'[^a-z0-9_]', '_', code.lower())}"


def parse_choices(text: str) -> tuple[tuple[str, str], ...]:
    """`1, Female | 2, Male` → (("1", "Female"), ("2", "Male")); a label may hold commas."""
    choices: list[tuple[str, str]] = []
    for part in text.split("|"):
        if not part.strip():
            continue
        code, comma, label = part.partition(",")
        code, label = code.strip(), " ".join(label.split())
        if not comma or not code or not label:
            raise ValidationError(f"{part.strip()!r} is not 'code, label'")
        if "|" in code or code in dict(choices):
            raise ValidationError(f"the choice code {code!r} is given twice")
        choices.append((code, label))
    if not choices:
        raise ValidationError("a choice field lists its choices as 'code, label | code, label'")
    return tuple(choices)


def _key(header: str) -> str:
    return " ".join(header.split()).casefold()


def _plain(text: str) -> str:
    """A label without REDCap's HTML, single-spaced and short enough to store."""
    return plain_text(text)[:LABEL_LIMIT]


def _day(text: str) -> date | None:
    """The date of `YYYY-MM-DD HH:MM`, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD`; None if none."""
    for layout in DATETIME_LAYOUTS:
        try:
            return datetime.strptime(text, layout).date()
        except ValueError:
            continue
    return None


def _bound(text: str, value_type: PhenotypeType) -> float | date | None:
    if not text:
        return None
    if value_type is PhenotypeType.date:
        if text.casefold() in ("today", "now"):
            return None  # the future is refused anyway
        day = _day(text)
        if day is None:
            raise ValidationError(f"{text!r} is not a date (YYYY-MM-DD [HH:MM]) or 'today'")
        return day
    try:
        return float(text.replace(",", "."))
    except ValueError:
        raise ValidationError(f"{text!r} is not a number") from None


def _value_type(field_type: str, validation: str) -> PhenotypeType:
    if field_type in CHOICE_TYPES:
        return CHOICE_TYPES[field_type]
    if field_type in FIXED_TYPES:
        return FIXED_TYPES[field_type]
    if field_type != "text":
        known = ", ".join(sorted({"text", *CHOICE_TYPES, *FIXED_TYPES, *SKIPPED_TYPES}))
        raise ValidationError(f"unknown field type {field_type!r} (known: {known})")
    if validation == "integer":
        return PhenotypeType.integer
    if NUMBER_VALIDATION.match(validation):
        return PhenotypeType.decimal
    if DATE_VALIDATION.match(validation):
        return PhenotypeType.date
    # email, phone, time…, and a site's own validation (REDCap lets an admin add them): text
    return PhenotypeType.text


def read_dictionary(records: Iterable[tuple[int, list[str]]]) -> Dictionary:
    """The fields of a data dictionary given as (line, cells), header first; every fault of
    the file is a `Problem` in the result, none raised."""
    result = Dictionary()
    rows = iter(records)
    header = next(rows, None)
    if header is None:
        result.problems.append(Problem(None, None, None, "the data dictionary is empty"))
        return result
    line, cells = header
    keys = [_key(c) for c in cells]
    index: dict[str, int] = {}
    for name, title in COLUMNS.items():
        found = [keys.index(k) for k in (_key(title), METADATA_KEYS[name]) if k in keys]
        if found:
            index[name] = found[0]
        else:
            reason = f"no column {title!r} (or {METADATA_KEYS[name]!r})"
            result.problems.append(Problem(line, title, None, reason))
    if result.problems:
        return result
    for line, cells in rows:
        _read_field(
            result, line, {n: cells[i].strip() if i < len(cells) else "" for n, i in index.items()}
        )
    return result


def _read_field(result: Dictionary, line: int, cell: Mapping[str, str]) -> None:
    name, field_type = cell["name"], cell["field_type"].lower()

    def problem(column: str, value: str, reason: str) -> None:
        result.problems.append(Problem(line, name or None, value, f"{COLUMNS[column]}: {reason}"))
        if name:
            result.faulty.append(name)

    if not FIELD_NAME.match(name) or len(name) > FIELD_NAME_LIMIT:
        return problem(
            "name",
            name,
            f"a field name is 1-{FIELD_NAME_LIMIT} of a-z, 0-9 and '_', from a letter",
        )
    if name in result.fields or name in result.skipped:
        return problem("name", name, "the field is listed twice")
    if not cell["form"]:
        return problem("form", "", "the field has no form")
    if field_type in SKIPPED_TYPES:
        result.skipped.append(name)
        return None
    validation = cell["validation"].lower() if field_type == "text" else ""
    try:
        value_type = _value_type(field_type, validation)
    except ValidationError as error:
        column = "validation" if field_type == "text" else "field_type"
        return problem(column, cell[column], error.message)
    choices: tuple[tuple[str, str], ...] = ()
    if field_type in CHOICE_TYPES or field_type == "checkbox":
        try:
            choices = parse_choices(cell["choices"])
        except ValidationError as error:
            return problem("choices", cell["choices"], error.message)
    bounds: list[Any] = [None, None]
    if field_type in ("text", "slider") and value_type in RANGED_TYPES:  # not times, emails…
        for at, side in enumerate(("min", "max")):
            try:
                bounds[at] = _bound(cell[side], value_type)
            except ValidationError as error:
                return problem(side, cell[side], error.message)
    low, high = bounds
    if field_type == "slider":
        low, high = (
            (SLIDER_RANGE[0] if low is None else low),
            (SLIDER_RANGE[1] if high is None else high),
        )
    if low is not None and high is not None and low > high:
        return problem(
            "min", cell["min"], f"the minimum {cell['min']} is above the maximum {cell['max']}"
        )
    dated = value_type is PhenotypeType.date
    result.fields[name] = Field(
        name=name,
        form=cell["form"].lower(),
        field_type=field_type,
        label=_plain(cell["label"]) or name,
        value_type=value_type,
        line=line,
        choices=choices,
        min_value=None if dated else low,
        max_value=None if dated else high,
        earliest=low if dated else None,
        latest=high if dated else None,
        comma_decimal=validation.endswith("_comma_decimal"),
        identifier=cell["identifier"].lower() == "y",
        note=_plain(cell["note"]) or None,
        validation=validation,
    )
    return None


def read_cell(field: Field, raw: str) -> Any:
    """One cell of a raw export as Python (int, float, bool, date, text, or a choice code),
    checked against the field; ValidationError names the field and the value."""
    raw = raw.strip()
    if field.value_type is PhenotypeType.choice and raw in dict(field.choices):
        return raw  # a raw export writes codes; a code that is another choice's label is a code
    if field.comma_decimal:
        raw = raw.replace(",", ".")
    if field.drops_time:
        raw = _datetime_day(field, raw).isoformat()  # then checked as any date
    spec = field.spec
    value = typed(spec, parse_value(spec, raw))
    if isinstance(value, date):
        if field.earliest is not None and value < field.earliest:
            raise ValidationError(
                f"{field.name}: {value} is before the earliest {field.earliest}",
                field=field.name,
                value=raw,
            )
        if field.latest is not None and value > field.latest:
            raise ValidationError(
                f"{field.name}: {value} is after the latest {field.latest}",
                field=field.name,
                value=raw,
            )
    return value


def _datetime_day(field: Field, raw: str) -> date:
    day = _day(raw)
    if day is None:
        raise ValidationError(
            f"{field.name}: {raw!r} is not a date and time (YYYY-MM-DD HH:MM[:SS])",
            field=field.name,
            value=raw,
        )
    return day


def read_checkboxes(field: Field, cells: Mapping[str, str]) -> list[str]:
    """The codes ticked, from each choice's `field___code` cell (1/0; empty: not exported)."""
    ticked = []
    for code, _ in field.choices:
        column = checkbox_column(field.name, code)
        raw = cells.get(column, "").strip()
        if raw not in ("", "0", "1"):
            raise ValidationError(
                f"{column}: {raw!r} is not 1 (ticked) or 0", field=column, value=raw
            )
        if raw == "1":
            ticked.append(code)
    return ticked


def split_event(raw: str) -> tuple[str, int | None]:
    """A unique event name's event and arm: `month_6_arm_1` → ("month_6", 1); a name without
    an arm is taken as written: `month6` → ("month6", None)."""
    name = raw.strip()
    found = EVENT_NAME.match(name)
    if found is None:
        return name, None
    return found.group(1), int(found.group(2))
