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


def repeating_instrument(*, longitudinal: bool) -> Project:
    """A repeating medications form: instance 1 in its event's visit, each later one a visit
    of its own dated by its start (the event's date when that is blank)."""
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
