"""REDCap-shaped projects for tests, written as REDCap writes them: the data dictionary with
its 18 download headers, and a raw records export.

The export's columns, in REDCap's order: the record ID; `redcap_event_name` in a longitudinal
project; `redcap_repeat_instrument` and `redcap_repeat_instance` only when a form or an event
repeats; `redcap_data_access_group` and `redcap_survey_identifier` only when asked for; then
form by form, `<form>_timestamp` (survey fields asked for), its fields (a checkbox as one
`field___code` column per choice, the code lower-cased and anything but letters, digits and
`_` written as `_`) and `<form>_complete`. A row fills only the forms it holds: a repeating
instrument's row its own form (with `redcap_repeat_instrument` naming it), a repeating event's
row its instance (the instrument cell blank), any other row both repeat cells blank."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from import_checks import observation

HEADERS = (
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note",
    "Text Validation Type OR Show Slider Number", "Text Validation Min", "Text Validation Max",
    "Identifier?", "Branching Logic (Show field only if...)", "Required Field?",
    "Custom Alignment", "Question Number (surveys only)", "Matrix Group Name", "Matrix Ranking?",
    "Field Annotation",
)  # fmt: skip
EVENT, INSTRUMENT, INSTANCE = (
    "redcap_event_name",
    "redcap_repeat_instrument",
    "redcap_repeat_instance",
)
DAG, SURVEY = "redcap_data_access_group", "redcap_survey_identifier"

Cell = str | list[str]  # a checkbox's cell: the codes ticked


@dataclass(frozen=True)
class Field:
    name: str
    form: str
    type: str = "text"
    label: str = ""
    choices: str = ""  # "1, Female | 2, Male"
    validation: str = ""

    @property
    def codes(self) -> list[str]:
        return [part.split(",")[0].strip() for part in self.choices.split("|") if part.strip()]

    @property
    def columns(self) -> list[str]:
        if self.type != "checkbox":
            return [self.name]
        return [f"{self.name}___{re.sub(r'[^a-z0-9_]', '_', c.lower())}" for c in self.codes]


@dataclass
class Row:
    """One row of the export: its record, event (longitudinal), repeat and cells by field."""

    record: str
    cells: dict[str, Cell]
    event: str = ""
    form: str = ""  # a repeating instrument's
    instance: int | None = None
    dag: str = ""


@dataclass
class Project:
    """A project: its fields (the first is the record ID), rows, and what importing it gives:
    each record's visits (label → date) and some of its values (label, variable, text)."""

    fields: list[Field]
    rows: list[Row]
    longitudinal: bool = False
    repeating: bool = False
    dag: bool = False
    survey: bool = False
    visits: dict[str, dict[str, date]] = field(default_factory=dict)
    values: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def forms(self) -> list[str]:
        return list(dict.fromkeys(f.form for f in self.fields))

    def columns(self) -> list[str]:
        columns = [self.fields[0].name]
        columns += [EVENT] if self.longitudinal else []
        columns += [INSTRUMENT, INSTANCE] if self.repeating else []
        columns += [DAG] if self.dag else []
        columns += [SURVEY] if self.survey else []
        for form in self.forms:
            columns += [f"{form}_timestamp"] if self.survey else []
            columns += [c for f in self.fields[1:] if f.form == form for c in f.columns]
            columns.append(f"{form}_complete")
        return columns

    def dictionary_rows(self) -> list[list[str]]:
        return [
            [f.name, f.form, "", f.type, f.label or f.name.replace("_", " ").title(), f.choices,
             "", f.validation, "", "", "", "", "", "", "", "", "", ""]
            for f in self.fields
        ]  # fmt: skip

    def record_rows(self) -> list[list[str]]:
        record_id = self.fields[0].name
        rows = []
        for row in self.rows:
            cells = {record_id: row.record, EVENT: row.event, DAG: row.dag}
            if row.instance is not None:
                cells |= {INSTRUMENT: row.form, INSTANCE: str(row.instance)}
            held = {f.form for f in self.fields[1:] if f.name in row.cells}
            for form in held:
                cells[f"{form}_complete"] = "2"
                cells[f"{form}_timestamp"] = "2024-01-02 10:20:30"
            for f in self.fields[1:]:
                given = row.cells.get(f.name)
                if f.type == "checkbox" and f.form in held:
                    ticked = given if isinstance(given, list) else []
                    cells |= {
                        c: str(int(code in ticked))
                        for c, code in zip(f.columns, f.codes, strict=True)
                    }
                elif isinstance(given, str):
                    cells[f.name] = given
            rows.append([cells.get(c, "") for c in self.columns()])
        return rows

    def write(self, folder: Path, *, bom: bool = False, crlf: bool = False) -> tuple[Path, Path]:
        """The dictionary and the records, as REDCap's download writes them."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "dictionary.csv", folder / "records.csv"
        tables = [HEADERS, *self.dictionary_rows()], [self.columns(), *self.record_rows()]
        for path, table in zip(paths, tables, strict=True):
            text = io.StringIO()
            csv.writer(text, lineterminator="\r\n" if crlf else "\n").writerows(table)
            path.write_text(("\ufeff" if bom else "") + text.getvalue(), encoding="utf-8")
        return paths


SEX = "1, Female | 2, Male | 3, Unknown"
SYMPTOMS = "1, Fever | 2, Rash | -99, Not known"


def _demographics(form: str = "demographics") -> list[Field]:
    return [
        Field("record_id", form),
        Field("sex", form, "radio", choices=SEX),
        Field("birth_year", form, validation="integer"),
    ]


def classic(ids: tuple[str, ...] = ("1", "2", "3", "4", "5")) -> Project:
    """No events, and no visit date field: each record's visit is dated by its first date."""
    fields = [
        *_demographics(),
        Field("enrol_date", "enrolment", validation="date_ymd"),
        Field("shape_weight", "enrolment", validation="number"),
        Field("shape_symptoms", "enrolment", "checkbox", choices=SYMPTOMS),
    ]
    rows, visits, values = [], {}, {}
    for n, record in enumerate(ids, start=1):
        day = date(2024, 1, n)
        cells: dict[str, Cell] = {
            "sex": "1" if n % 2 else "2", "birth_year": str(1970 + n),
            "enrol_date": day.isoformat(), "shape_weight": f"{60 + n}.5",
            "shape_symptoms": ["1", "-99"] if n == 1 else ["2"],
        }  # fmt: skip
        rows.append(Row(record, cells))
        visits[record] = {"enrolment": day}
        values[record] = {("enrolment", "shape_weight", f"{60 + n}.5")}
    return Project(fields, rows, visits=visits, values=values)


def _visit_form() -> list[Field]:
    return [
        Field("visit_date", "visit", validation="date_ymd"),
        Field("shape_score", "visit", validation="integer"),
    ]


def two_arm() -> Project:
    """Two arms, each with a screening and a week 4 event; the arm is dropped from labels."""
    fields = [*_demographics(), *_visit_form()]
    plan = {"A-1": 1, "A-2": 1, "B-1": 2}  # record → arm
    rows, visits, values = [], {}, {}
    for n, (record, arm) in enumerate(plan.items(), start=1):
        visits[record], values[record] = {}, set()
        for weeks, event in ((0, "screening"), (4, "week_4")):
            day = date(2024, 2, n) + timedelta(weeks=weeks)
            cells: dict[str, Cell] = {"visit_date": day.isoformat(), "shape_score": str(n + weeks)}
            if weeks == 0:
                cells |= {"sex": "1", "birth_year": "1980"}
            rows.append(Row(record, cells, event=f"{event}_arm_{arm}"))
            label = event.replace("_", " ")
            visits[record][label] = day
            values[record].add((label, "shape_score", str(n + weeks)))
    return Project(fields, rows, longitudinal=True, visits=visits, values=values)


def _medications() -> list[Field]:
    return [
        Field("med_name", "medications"),
        Field("med_start", "medications", validation="date_ymd"),
        Field("med_dose", "medications", validation="number"),
    ]


def repeating_instrument(*, longitudinal: bool, observed: bool = True) -> Project:
    """A repeating medications form: each instance a dated observation in its event's visit
    (`observed`, the default), dated by its start (the event's date when that is blank); or
    (mapped so) instance 1 in its event's visit and each later one a visit of its own, dated
    alike."""
    base_fields = _visit_form() if longitudinal else [
        Field("enrol_date", "enrolment", validation="date_ymd")
    ]  # fmt: skip
    fields = [*_demographics(), *base_fields, *_medications()]
    date_field = "visit_date" if longitudinal else "enrol_date"
    event, label = ("baseline_arm_1", "baseline") if longitudinal else ("", "enrolment")
    rows, visits, values = [], {}, {}
    drugs = {"R-1": ["hcq", "pred", "mmf"], "R-2": ["hcq"]}
    for n, (record, names) in enumerate(drugs.items(), start=1):
        day = date(2024, 3, n)
        cells: dict[str, Cell] = {"sex": "2", "birth_year": "1990", date_field: day.isoformat()}
        rows.append(Row(record, cells, event=event))
        visits[record], values[record] = {label: day}, set()
        for instance, name in enumerate(names, start=1):
            started = date(2024, 4, instance) if instance != 2 else None  # 2: no start date
            med: dict[str, Cell] = {"med_name": name, "med_dose": f"{instance}.5"}
            if started:
                med["med_start"] = started.isoformat()
            rows.append(Row(record, med, event=event, form="medications", instance=instance))
            if observed:
                visit = observation(label, instance, started or day)
            else:
                visit = label if instance == 1 else f"{label} medications #{instance}"
                if instance > 1:
                    visits[record][visit] = started or day
            values[record].add((visit, "med_name", name))
    return Project(
        fields, rows, longitudinal=longitudinal, repeating=True, visits=visits, values=values
    )


def repeating_event() -> Project:
    """A baseline and a repeating follow-up event: instance 1 is "follow up", then "#2"…"""
    fields = [*_demographics(), *_visit_form()]
    rows, visits, values = [], {}, {}
    for n, record in enumerate(("E-1", "E-2"), start=1):
        day = date(2024, 5, n)
        cells: dict[str, Cell] = {"sex": "1", "birth_year": "1985", "visit_date": day.isoformat()}
        rows.append(Row(record, cells, event="baseline_arm_1"))
        visits[record], values[record] = {"baseline": day}, set()
        for instance in (1, 2, 3):
            on = date(2024, 5 + instance, n)
            score = str(10 * instance + n)
            rows.append(
                Row(
                    record,
                    {"visit_date": on.isoformat(), "shape_score": score},
                    event="follow_up_arm_1",
                    instance=instance,
                )
            )
            visit = "follow up" if instance == 1 else f"follow up #{instance}"
            visits[record][visit] = on
            values[record].add((visit, "shape_score", score))
    return Project(fields, rows, longitudinal=True, repeating=True, visits=visits, values=values)


def dag_survey() -> Project:
    """Data access groups and survey fields (identifier, timestamps, completion): ignored."""
    project = two_arm()
    project.dag = project.survey = True
    for row in project.rows:
        row.dag = "site_a" if row.record.startswith("A") else "site_b"
    return project


def phi_unflagged() -> Project:
    """A classic project whose PHI nobody flagged `Identifier? = y`: a phone (by its
    validation), an e-mail address (by its label), a next of kin's name, street address, date of
    birth and SSN (by their names), beside a weight and a drug's name that are data."""
    fields = [
        *_demographics(),
        Field("enrol_date", "enrolment", validation="date_ymd"),
        Field("home_phone", "enrolment", validation="phone"),
        Field("contact", "enrolment", label="E-mail address"),
        Field("nok_name", "enrolment", label="Next of kin"),
        Field("street_address", "enrolment"),
        Field("nok_dob", "enrolment", validation="date_ymd"),
        Field("ssn_last4", "enrolment"),
        Field("shape_weight", "enrolment", validation="number"),
        Field("med_name", "enrolment", label="Drug name"),
    ]
    rows, visits, values = [], {}, {}
    for n, record in enumerate(("1", "2"), start=1):
        day = date(2024, 6, n)
        cells: dict[str, Cell] = {
            "sex": "1", "birth_year": "1975", "enrol_date": day.isoformat(),
            "home_phone": f"(617) 555-010{n}", "contact": f"pat{n}@example.org",
            "nok_name": f"Alex Doe{n}", "street_address": f"{n} Elm Street",
            "nok_dob": f"1950-01-0{n}", "ssn_last4": f"123{n}", "shape_weight": f"7{n}.5",
            "med_name": "hydroxychloroquine",
        }  # fmt: skip
        rows.append(Row(record, cells))
        visits[record] = {"enrolment": day}
        values[record] = {
            ("enrolment", "shape_weight", f"7{n}.5"),
            ("enrolment", "med_name", "hydroxychloroquine"),
        }
    return Project(fields, rows, visits=visits, values=values)


SHAPES = {
    "classic": classic,
    "two_arm": two_arm,
    "repeating_instrument_classic": lambda: repeating_instrument(longitudinal=False),
    "repeating_instrument_longitudinal": lambda: repeating_instrument(longitudinal=True),
    "repeating_event": repeating_event,
    "dag_survey": dag_survey,
}


def no_dates() -> Project:
    """REDCap's "Longitudinal Database" template as a new project keeps it: its events hold no
    date field, but for the enrolment date in demographics (beside a name and a date of birth),
    so every later visit is dated by its record's first date."""
    fields = [
        Field("study_id", "demographics", label="Study ID"),
        Field("date_enrolled", "demographics", label="Date subject signed consent",
              validation="date_ymd"),
        Field("first_name", "demographics", label="First Name"),
        Field("dob", "demographics", label="Date of birth", validation="date_ymd"),
        Field("gender", "demographics", "radio", label="Gender", choices="0, Female | 1, Male"),
        Field("nd_height", "baseline_data", label="Height (cm)", validation="number"),
        Field("nd_prealb", "visit_lab_data", label="Prealbumin (mg/dL)", validation="number"),
        Field("nd_creat", "visit_lab_data", label="Creatinine (mg/dL)", validation="number"),
        Field("nd_completed", "completion_data", "yesno", label="Completed the study"),
    ]  # fmt: skip
    rows, visits, values = [], {}, {}
    events = ("dose_1_arm_1", "visit_1_arm_1", "final_visit_arm_1")
    for n, record in enumerate(("1", "2", "3"), start=1):
        day = date(2023, 9, n)
        rows.append(Row(record, {
            "date_enrolled": day.isoformat(), "first_name": f"Sam{n}", "dob": f"1960-0{n}-15",
            "gender": str(n % 2), "nd_height": f"16{n}",
        }, event="enrollment_arm_1"))  # fmt: skip
        visits[record] = {"enrollment": day}
        values[record] = set()
        for event in events[:2]:
            label = event.removesuffix("_arm_1").replace("_", " ")
            prealb = f"{20 + n}.5"
            cells: dict[str, Cell] = {"nd_prealb": prealb, "nd_creat": "0.9"}
            rows.append(Row(record, cells, event=event))
            visits[record][label] = day
            values[record].add((label, "nd_prealb", prealb))
        rows.append(Row(record, {"nd_completed": "1"}, event=events[2]))
        visits[record]["final visit"] = day
        values[record].add(("final visit", "nd_completed", "1"))
    return Project(fields, rows, longitudinal=True, visits=visits, values=values)


# A cell of each validation REDCap has, as a raw export writes it (dates as YYYY-MM-DD).
VALIDATION_CELLS = {
    "date_ymd": "2024-01-15", "date_mdy": "2024-01-16", "date_dmy": "2024-01-17",
    "datetime_ymd": "2024-01-18 09:30", "datetime_mdy": "2024-01-19 10:45",
    "datetime_dmy": "2024-01-20 11:00", "datetime_seconds_ymd": "2024-01-21 12:00:15",
    "datetime_seconds_mdy": "2024-01-22 13:30:45", "datetime_seconds_dmy": "2024-01-23 14:00:00",
    "time": "09:30", "time_hh_mm_ss": "09:30:15", "time_mm_ss": "30:15", "integer": "42",
    "number": "3.25", "number_1dp": "3.5", "number_2dp": "3.25", "number_3dp": "3.125",
    "number_4dp": "3.0625", "number_1dp_comma_decimal": "3,5", "number_2dp_comma_decimal": "3,25",
    "alpha_only": "abc", "email": "pat@example.org", "phone": "(617) 555-0100",
    "phone_australia": "02 9999 9999", "zipcode": "02139", "postalcode_canada": "K1A 0B1",
    "postalcode_uk": "SW1A 1AA", "mrn_generic": "A123", "ssn": "123-45-6789", "vmrn": "V123",
}  # fmt: skip
# What each is stored as, when it is data (not PHI): dates and datetimes as their day
VALIDATION_VALUES = {
    "date_ymd": "2024-01-15", "datetime_seconds_dmy": "2024-01-23", "time_hh_mm_ss": "09:30:15",
    "integer": "42", "number_4dp": "3.0625", "number_2dp_comma_decimal": "3.25",
    "alpha_only": "abc",
}  # fmt: skip


def validation_types() -> Project:
    """A classic project with a field of every REDCap validation type, and a visit date kept
    in a datetime field: each value is read as its type (the PHI ones go to the identity
    table), the visit dated by the datetime's day."""
    fields = [
        Field("record_id", "intake"),
        Field("vt_visit_at", "intake", label="Visit date and time", validation="datetime_ymd"),
        *(Field(f"vt_{v}", "measures", validation=v) for v in VALIDATION_CELLS),
    ]
    rows, visits, values = [], {}, {}
    for n, record in enumerate(("VT-1", "VT-2"), start=1):
        cells: dict[str, Cell] = {f"vt_{v}": cell for v, cell in VALIDATION_CELLS.items()}
        cells["vt_visit_at"] = f"2024-02-0{n} 08:15"
        rows.append(Row(record, cells))
        visits[record] = {"enrolment": date(2024, 2, n)}
        values[record] = {("enrolment", f"vt_{v}", text) for v, text in VALIDATION_VALUES.items()}
    return Project(fields, rows, visits=visits, values=values)


NIH_SEX = "1, Female | 2, Male | 3, Unknown or Not Reported"
NIH_RACE = (
    "1, American Indian or Alaska Native | 2, Asian | 3, Black or African American | "
    "4, Native Hawaiian or Other Pacific Islander | 5, White | 6, More Than One Race"
)
NIH_ETHNICITY = "1, Hispanic or Latino | 2, Not Hispanic or Latino | 3, Unknown / Not Reported"


def race_collision() -> Project:
    """An NIH-style classic project whose `race` (a checkbox, codes 1-6) and `ethnicity` (other
    choices) have the names of the lupus dictionary's variables but not their meaning, and
    whose sex says "Unknown or Not Reported"."""
    fields = [
        Field("record_id", "demographics"),
        Field("sex", "demographics", "radio", choices=NIH_SEX),
        Field("birth_year", "demographics", validation="integer"),
        Field("race", "demographics", "checkbox", label="Race", choices=NIH_RACE),
        Field("ethnicity", "demographics", "radio", label="Ethnicity", choices=NIH_ETHNICITY),
        Field("enrol_date", "screening", validation="date_ymd"),
        Field("shape_bmi", "screening", validation="number"),
    ]
    given = {"N-1": (["5"], "2", "1"), "N-2": (["3", "5"], "1", "2"), "N-3": (["2"], "3", "3")}
    rows, visits, values = [], {}, {}
    for n, (record, (race, ethnicity, sex)) in enumerate(given.items(), start=1):
        day = date(2024, 7, n)
        cells: dict[str, Cell] = {
            "sex": sex, "birth_year": str(1980 + n), "race": race, "ethnicity": ethnicity,
            "enrol_date": day.isoformat(), "shape_bmi": f"2{n}.5",
        }  # fmt: skip
        rows.append(Row(record, cells))
        visits[record] = {"enrolment": day}
        values[record] = {("enrolment", "shape_bmi", f"2{n}.5")}
    return Project(fields, rows, visits=visits, values=values)


CONSENT_FIELDS = {
    "consent_future": "FUTURE_RESEARCH", "consent_genetic": "GENETIC",
    "consent_commercial": "COMMERCIAL", "consent_share": "DATA_SHARING",
    "consent_recontact": "RECONTACT",
}  # fmt: skip
"""The shipped mapping's consent statements: field → statement."""


def consent_change() -> Project:
    """A classic project with the shipped mapping's consent form, each record signing version
    3.0 with every answer yes; a test then changes an answer in REDCap."""
    fields = [
        *_demographics(),
        Field("enrol_date", "enrolment", validation="date_ymd"),
        Field("shape_weight", "enrolment", validation="number"),
        Field("consent_version", "consent"),
        Field("consent_date", "consent", validation="date_ymd"),
        *(Field(name, "consent", "yesno") for name in CONSENT_FIELDS),
    ]
    rows, visits, values = [], {}, {}
    for n, record in enumerate(("C-1", "C-2"), start=1):
        day = date(2024, 1, 10 + n)
        cells: dict[str, Cell] = {
            "sex": "1", "birth_year": "1975", "enrol_date": day.isoformat(),
            "shape_weight": f"6{n}.5", "consent_version": "3.0",
            "consent_date": day.isoformat(), **dict.fromkeys(CONSENT_FIELDS, "1"),
        }  # fmt: skip
        rows.append(Row(record, cells))
        visits[record] = {"enrolment": day}
        values[record] = {("enrolment", "shape_weight", f"6{n}.5")}
    return Project(fields, rows, visits=visits, values=values)


def checkbox_negative() -> Project:
    """A classic project with a checkbox whose "not known" choice has REDCap's negative code
    -99 (exported as the column `shape_signs____99`), and a radio of the same codes."""
    signs = "1, Fever | 2, Rash | -99, Not known"
    fields = [
        *_demographics(),
        Field("enrol_date", "enrolment", validation="date_ymd"),
        Field("shape_signs", "enrolment", "checkbox", label="Signs", choices=signs),
        Field("shape_worst", "enrolment", "radio", label="Worst sign", choices=signs),
    ]
    ticked = {"K-1": (["1", "-99"], "1"), "K-2": (["2"], "2"), "K-3": (["-99"], "-99")}
    rows, visits, values = [], {}, {}
    for n, (record, (signs_ticked, worst)) in enumerate(ticked.items(), start=1):
        day = date(2024, 8, n)
        cells: dict[str, Cell] = {
            "sex": "2", "birth_year": "1990", "enrol_date": day.isoformat(),
            "shape_signs": signs_ticked, "shape_worst": worst,
        }  # fmt: skip
        rows.append(Row(record, cells))
        visits[record] = {"enrolment": day}
        values[record] = {("enrolment", "shape_worst", worst)}
    return Project(fields, rows, visits=visits, values=values)


# --- Missing-data codes and cleared cells: a re-import is a sync ------------------------------

GRADES = "1, Mild | 2, Moderate | UNK, Unknown grade"  # UNK: a choice here, not missing
FEVER_RASH = "1, Fever | 2, Rash"


@dataclass
class CodedProject(Project):
    """A project that declares missing-data codes: REDCap exports each checkbox with a column
    per code too (`field___nask`), 1 where the code is chosen (the checkbox's cell lists it).
    `missing`: what importing it stores as missing, (record, visit or None, variable, code)."""

    codes: tuple[str, ...] = ()
    missing: set[tuple[str, str | None, str, str]] = field(default_factory=set)

    def _extra(self, f: Field) -> list[tuple[str, str]]:
        if f.type != "checkbox":
            return []
        return [(f"{f.name}___{re.sub(r'[^a-z0-9_]', '_', c.lower())}", c) for c in self.codes]

    def columns(self) -> list[str]:
        columns = super().columns()
        for f in self.fields[1:]:
            extra = [column for column, _ in self._extra(f)]
            if extra:
                at = columns.index(f.columns[-1]) + 1
                columns[at:at] = extra
        return columns

    def record_rows(self) -> list[list[str]]:
        columns = self.columns()
        rows = super().record_rows()
        for row, cells in zip(self.rows, rows, strict=True):
            for f in self.fields[1:]:
                given = row.cells.get(f.name)
                ticked = given if isinstance(given, list) else []
                if cells[columns.index(f.columns[0])] != "":  # its form is in the row
                    for column, code in self._extra(f):
                        cells[columns.index(column)] = str(int(code in ticked))
        return rows


def missing_codes() -> CodedProject:
    """REDCap's standard missing-data codes in an integer, a number, a choice, a checkbox, a
    text and a participant-level date (demographics is a participant form); `UNK` is also a
    choice of shape_grade, and stays that choice."""
    fields = [
        *_demographics(),
        Field("shape_onset", "demographics", validation="date_ymd"),
        Field("visit_date", "visit", validation="date_ymd"),
        Field("shape_score", "visit", validation="integer"),
        Field("shape_weight", "visit", validation="number"),
        Field("shape_grade", "visit", "radio", choices=GRADES),
        Field("shape_symptoms", "visit", "checkbox", choices=FEVER_RASH),
        Field("shape_note", "visit"),
    ]
    rows = [
        Row("M-1", {
            "sex": "1", "birth_year": "1980", "shape_onset": "UNK", "visit_date": "2024-03-01",
            "shape_score": "NASK", "shape_weight": "61.5", "shape_grade": "UNK",
            "shape_symptoms": ["NASK"], "shape_note": "NA",
        }, event="baseline_arm_1"),
        Row("M-1", {
            "visit_date": "2024-09-01", "shape_score": "4", "shape_weight": "UNK",
            "shape_grade": "2", "shape_symptoms": ["1"], "shape_note": "better",
        }, event="month_6_arm_1"),
        Row("M-2", {
            "sex": "2", "birth_year": "1990", "shape_onset": "2019-05-01",
            "visit_date": "2024-03-02", "shape_score": "3", "shape_weight": "NA",
            "shape_grade": "NASK", "shape_symptoms": ["2"], "shape_note": "fine",
        }, event="baseline_arm_1"),
    ]  # fmt: skip
    visits = {
        "M-1": {"baseline": date(2024, 3, 1), "month 6": date(2024, 9, 1)},
        "M-2": {"baseline": date(2024, 3, 2)},
    }
    values = {
        "M-1": {
            ("baseline", "shape_weight", "61.5"), ("baseline", "shape_grade", "UNK"),
            ("month 6", "shape_score", "4"), ("month 6", "shape_grade", "2"),
            ("month 6", "shape_symptoms", "1"), ("month 6", "shape_note", "better"),
        },
        "M-2": {
            ("baseline", "shape_score", "3"), ("baseline", "shape_symptoms", "2"),
            ("baseline", "shape_note", "fine"),
        },
    }  # fmt: skip
    missing = {
        ("M-1", None, "shape_onset", "UNK"), ("M-1", "baseline", "shape_score", "NASK"),
        ("M-1", "baseline", "shape_symptoms", "NASK"), ("M-1", "baseline", "shape_note", "NA"),
        ("M-1", "month 6", "shape_weight", "UNK"), ("M-2", "baseline", "shape_weight", "NA"),
        ("M-2", "baseline", "shape_grade", "NASK"),
    }  # fmt: skip
    return CodedProject(
        fields, rows, longitudinal=True, visits=visits, values=values,
        codes=("NASK", "UNK", "NA"), missing=missing,
    )  # fmt: skip


MED_1, MED_2 = (
    observation("baseline", n, date(2024, 3, 1)) for n in (1, 2)
)  # undated: the visit's


def cleared_cell() -> Project:
    """Rows that hold only some forms: baseline holds demographics, visit and labs, month 6
    only visit (C-2's month 6 demographics too), and a repeating medications form's rows only
    their form. A test blanks a cell (`""`: its form still held) and imports again."""
    fields = [
        *_demographics(),
        Field("shape_onset", "demographics", validation="date_ymd"),
        *_visit_form(),
        Field("shape_weight", "visit", validation="number"),
        Field("shape_symptoms", "visit", "checkbox", choices=FEVER_RASH),
        Field("shape_crp", "labs", validation="number"),
        Field("med_name", "medications"),
        Field("med_dose", "medications", validation="number"),
    ]
    rows = [
        Row("C-1", {
            "sex": "1", "birth_year": "1980", "shape_onset": "2015-01-01",
            "visit_date": "2024-03-01", "shape_score": "5", "shape_weight": "61.5",
            "shape_symptoms": ["1"], "shape_crp": "2.5",
        }, event="baseline_arm_1"),
        Row("C-1", {"med_name": "hcq", "med_dose": "200"}, event="baseline_arm_1",
            form="medications", instance=1),
        Row("C-1", {"med_name": "pred", "med_dose": "5"}, event="baseline_arm_1",
            form="medications", instance=2),
        Row("C-1", {
            "visit_date": "2024-09-01", "shape_score": "3", "shape_weight": "60",
            "shape_symptoms": ["2"],
        }, event="month_6_arm_1"),
        Row("C-2", {
            "sex": "2", "birth_year": "1990", "visit_date": "2024-03-02", "shape_score": "7",
            "shape_weight": "70", "shape_crp": "1.5",
        }, event="baseline_arm_1"),
        Row("C-2", {
            "shape_onset": "2019-01-01", "visit_date": "2024-09-02", "shape_score": "6",
        }, event="month_6_arm_1"),
    ]  # fmt: skip
    visits = {
        "C-1": {
            "baseline": date(2024, 3, 1), "month 6": date(2024, 9, 1),
        },
        "C-2": {"baseline": date(2024, 3, 2), "month 6": date(2024, 9, 2)},
    }  # fmt: skip
    values = {
        "C-1": {
            ("baseline", "shape_weight", "61.5"), ("baseline", "shape_crp", "2.5"),
            (MED_1, "med_name", "hcq"), (MED_2, "med_dose", "5"),
            ("month 6", "shape_weight", "60"),
        },
        "C-2": {("baseline", "shape_crp", "1.5"), ("month 6", "shape_score", "6")},
    }  # fmt: skip
    return Project(fields, rows, longitudinal=True, repeating=True, visits=visits, values=values)
