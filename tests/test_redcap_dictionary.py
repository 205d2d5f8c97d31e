"""A REDCap data dictionary read as REDCap writes it: datetime fields as dates (the time dropped
and listed), times as text, every built-in validation, field names up to REDCap's 100
characters, the API's snake_case metadata keys as well as a CSV download's headers (BOM and
CRLF too), and unique event names with or without an arm; a mistake is a problem naming its
line, field, value and the dictionary's column."""

import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from biobank import redcap
from biobank.db import uow
from biobank.domain.vocabulary import PhenotypeType
from biobank.errors import ValidationError
from biobank.redcap import Problem
from biobank.services import participants, phenotypes, studies
from biobank.services.imports import redcap as redcap_import
from biobank.tabular import open_source

HEADER = [
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
]
METADATA = [  # the same columns, as the API's metadata export names them
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
]
ORDERS = ("ymd", "mdy", "dmy")
DATETIMES = [f"{kind}_{order}" for kind in ("datetime", "datetime_seconds") for order in ORDERS]
TIMES = {"time": "14:30", "time_hh_mm_ss": "14:30:59", "time_mm_ss": "31:22"}
# every validation REDCap ships, and what its values become
VALIDATIONS = {
    "integer": PhenotypeType.integer,
    **{
        f"number{places}{comma}": PhenotypeType.decimal
        for places in ("", "_1dp", "_2dp", "_3dp", "_4dp")
        for comma in ("", "_comma_decimal")
    },
    **{f"date_{order}": PhenotypeType.date for order in ORDERS},
    **dict.fromkeys(DATETIMES, PhenotypeType.date),
    **dict.fromkeys(TIMES, PhenotypeType.text),
    **dict.fromkeys(
        (
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
            "vmrn",
            "zipcode",
        ),
        PhenotypeType.text,
    ),
}
LONG_NAME = (
    "time_of_the_first_study_visit_as_the_research_nurse_recorded_it_in_the_clinic_day_log_book"
)
assert len(LONG_NAME) == 90


def _field(name: str, field_type: str = "text", **cells: str) -> list[str]:
    """One dictionary row: its 18 cells, the ones given filled."""
    row = dict.fromkeys(METADATA, "")
    row |= {"field_name": name, "form_name": cells.pop("form", "visit"), "field_type": field_type}
    row |= {"field_label": cells.pop("label", name.replace("_", " ").capitalize())}
    keys = {
        "choices": "select_choices_or_calculations",
        "note": "field_note",
        "validation": "text_validation_type_or_show_slider_number",
        "min": "text_validation_min",
        "max": "text_validation_max",
        "identifier": "identifier",
    }
    row |= {keys[k]: v for k, v in cells.items()}
    return list(row.values())


def _read(rows: list[list[str]], header: list[str] = HEADER) -> redcap.Dictionary:
    return redcap.read_dictionary(enumerate([header, *rows], start=1))


# --- What REDCap writes ----------------------------------------------------------------------


@pytest.mark.parametrize("validation", DATETIMES)
def test_a_datetime_field_is_read_as_its_date_and_listed(validation):
    found = _read(
        [_field("record_id"), _field("seen_at", validation=validation, min="2020-01-01 08:00")]
    )
    seen = found.fields["seen_at"]
    assert (seen.value_type, seen.drops_time, seen.earliest) == (
        PhenotypeType.date,
        True,
        date(2020, 1, 1),
    )
    assert found.times_dropped == ["seen_at"] and not found.problems
    cell = "2024-03-05 14:30:59" if "seconds" in validation else "2024-03-05 14:30"
    assert redcap.read_cell(seen, cell) == date(2024, 3, 5)  # raw exports write Y-M-D


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("2024-03-05 25:00", "seen_at: '2024-03-05 25:00' is not a date and time"),
        ("05-03-2024 14:30", "seen_at: '05-03-2024 14:30' is not a date and time"),
        ("2024-02-30 10:00", "seen_at: '2024-02-30 10:00' is not a date and time"),
        ("2019-12-31 23:59", "seen_at: 2019-12-31 is before the earliest 2020-01-01"),
        (f"{date.today() + timedelta(days=2)} 10:00", "is in the future"),
    ],
)
def test_a_datetime_cell_that_is_not_one_names_its_field(cell, reason):
    seen = _read([_field("seen_at", validation="datetime_dmy", min="2020-01-01")]).fields["seen_at"]
    with pytest.raises(ValidationError, match=re.escape(reason)):
        redcap.read_cell(seen, cell)


@pytest.mark.parametrize(("validation", "cell"), TIMES.items())
def test_a_time_field_stays_text(validation, cell):
    found = _read([_field("clock", validation=validation)])
    clock = found.fields["clock"]
    assert (clock.value_type, clock.drops_time, found.times_dropped) == (
        PhenotypeType.text,
        False,
        [],
    )
    assert redcap.read_cell(clock, cell) == cell


def test_every_validation_redcap_ships_is_read():
    rows = [_field(f"f_{v}", validation=v) for v in VALIDATIONS]
    found = _read(rows)
    assert found.problems == []
    assert {n[2:]: f.value_type for n, f in found.fields.items()} == VALIDATIONS
    assert found.times_dropped == [f"f_{v}" for v in DATETIMES]


def test_the_validation_column_of_a_slider_dropdown_or_file_is_not_a_text_validation():
    found = _read(
        [
            _field("pain", "slider", choices="None | | Worst", validation="number"),
            _field("drug", "dropdown", choices="1, Aspirin | 2, Other", validation="autocomplete"),
            _field("signed", "file", validation="signature"),
        ]
    )
    assert (found.problems, list(found.fields), found.skipped) == ([], ["pain", "drug"], ["signed"])


def test_field_names_run_to_redcaps_100_characters():
    hundred = "symptoms_" + "x" * 91
    found = _read(
        [
            _field(LONG_NAME, validation="datetime_ymd"),
            _field(hundred, "checkbox", choices="1, Rash | -99, Unknown"),
        ]
    )
    assert found.problems == [] and list(found.fields) == [LONG_NAME, hundred]
    assert found.fields[hundred].columns == (f"{hundred}___1", f"{hundred}____99")
    too_long = "y" * 101
    assert _read([_field(too_long)]).problems == [
        Problem(
            2,
            too_long,
            too_long,
            "Variable / Field Name: a field name is 1-100 of a-z, 0-9 and '_', from a letter",
        )
    ]


PROJECT = [
    _field("record_id", form="enrolment", label="<b>Record</b> ID"),
    _field("intro", "descriptive", form="enrolment", label="Welcome"),
    _field("nok_phone", form="enrolment", validation="phone", identifier="y"),
    _field("sex", "radio", form="enrolment", choices="1, Female | 2, Male | 3, Intersex"),
    _field("race", "checkbox", form="enrolment", choices="1, Asian | 2, White | -99, Unknown"),
    _field(LONG_NAME, validation="datetime_seconds_dmy", min="2020-01-01 00:00:00", max="now"),
    _field("weight", validation="number_1dp_comma_decimal", min="2,5", max="300", note="kg"),
    _field("pain", "slider", choices="None | Some | Worst", validation="number"),
    _field("bmi", "calc", choices="[weight]/([height]*[height])"),
    _field("hcq", "sql", choices="select value, label from drugs"),
    _field("smoker", "truefalse"),
    _field("notes", "notes"),
    _field("signed", "file", validation="signature"),
]


def test_the_api_metadata_reads_as_the_csv_download(tmp_path):
    download = _read(PROJECT)
    assert download.problems == [] and len(download.fields) == 11
    assert _read(PROJECT, header=METADATA) == download
    shuffled = [METADATA[i] for i in reversed(range(18))]
    assert _read([row[::-1] for row in PROJECT], header=shuffled) == download
    # as a file from the API, with a byte-order mark and CRLF line ends
    path = tmp_path / "metadata.csv"
    lines = [",".join(f'"{c}"' for c in row) for row in [METADATA, *PROJECT]]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    assert redcap.read_dictionary(open_source(path, [], "data dictionary").records()) == download


@pytest.mark.parametrize(
    ("raw", "event"),
    [
        ("baseline_arm_1", ("baseline", 1)),
        ("month_6_arm_12", ("month_6", 12)),
        ("month6", ("month6", None)),
        (" visit_2 ", ("visit_2", None)),
        ("Follow-up", ("Follow-up", None)),
    ],
)
def test_an_event_name_without_an_arm_is_taken_as_written(raw, event):
    assert redcap.split_event(raw) == event


# --- Mistakes --------------------------------------------------------------------------------


def test_a_sites_own_validation_is_read_as_text_and_named():
    """REDCap lets an admin add validation types (`jhmrn_jh8d`, `percentage`…): the field is
    kept as text, never refused, and the import says which."""
    found = _read([_field("record_id"), _field("hba1c", validation="Percentage")])
    assert found.problems == []
    assert found.fields["hba1c"].value_type is PhenotypeType.text
    assert found.custom_validations == ["hba1c (percentage)"]
    assert found.fields["record_id"].custom_validation is False


@pytest.mark.parametrize("header", [HEADER, METADATA], ids=["download", "metadata"])
def test_a_header_without_a_column_names_it(header):
    without = [c for c in header if c not in ("Field Type", "field_type")]
    found = _read([row[:3] + row[4:] for row in PROJECT], header=without)
    assert (found.fields, found.problems) == (
        {},
        [Problem(1, "Field Type", None, "no column 'Field Type' (or 'field_type')")],
    )


# --- Imported --------------------------------------------------------------------------------


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="DT", title="Datetime registry")


def _files(tmp_path: Path, *extra: list[str]) -> dict[str, Path]:
    """A project whose visit date is a datetime with seconds under a 90-character name, with a
    time field and events named without an arm."""
    rows = [
        _field("record_id", form="demographics"),
        _field("sex", "radio", form="demographics", choices="1, Female | 2, Male"),
        _field(LONG_NAME, validation="datetime_seconds_dmy", min="2020-01-01 00:00:00"),
        _field("clinic_time", validation="time"),
        *extra,
    ]
    dictionary, records, mapping = (tmp_path / n for n in ("dd.csv", "records.csv", "map.toml"))
    dictionary.write_text(
        "\n".join(",".join(f'"{c}"' for c in row) for row in [HEADER, *rows]) + "\n", "utf-8"
    )
    records.write_text(
        f"record_id,redcap_event_name,sex,{LONG_NAME},clinic_time\n"
        "DT-001,screening,1,2024-01-15 09:30:00,09:30\n"
        "DT-001,week_4,,2024-02-12 10:05:59,10:05\n"
        "DT-002,screening,2,2024-01-16 14:00:00,\n",
        "utf-8",
    )
    mapping.write_text(f'visit_date = "{LONG_NAME}"\n', "utf-8")
    return {"dictionary": dictionary, "records": records, "mapping": mapping}


def test_a_visit_date_kept_in_a_datetime_field_imports(engine, admin, study, tmp_path):
    files = _files(tmp_path, _field("dose_pct", validation="percentage"))
    with uow(engine) as session:
        plan = redcap_import.check_redcap(
            session,
            actor=admin,
            dictionary=files["dictionary"],
            records=files["records"],
            mapping=redcap_import.redcap_mapping(files["mapping"]),
        )
        assert plan.report.faults == []
        assert (
            f"datetime fields read as dates, the time dropped: {LONG_NAME}" in plan.report.notices
        )
        assert (
            "fields with a validation of this REDCap's own, read as text: dose_pct (percentage)"
            in plan.report.notices
        )
        redcap_import.write_redcap(session, actor=admin, plan=plan)
    with uow(engine, readonly=True) as session:
        first = participants.show_participant(session, actor=admin, study="DT", record="DT-001")
        values = phenotypes.participant_phenotypes(session, actor=admin, participant=first.code)
    assert first.sex == "female"
    assert [(v.label, v.visit_date) for v in first.visits] == [
        ("screening", date(2024, 1, 15)),
        ("week 4", date(2024, 2, 12)),
    ]
    assert {(v.variable, v.visit): v.value for v in values} == {
        ("clinic_time", "screening"): "09:30",
        ("clinic_time", "week 4"): "10:05",
    }

    # a long name that must become a variable's is refused there, as before (a later step)
    too_long = "x" * 65
    files = _files(tmp_path, _field(too_long))
    with uow(engine, readonly=True) as session:
        report = redcap_import.check_redcap(
            session,
            actor=admin,
            dictionary=files["dictionary"],
            records=files["records"],
            mapping=redcap_import.redcap_mapping(files["mapping"]),
        ).report
    assert [(f.file, f.line, f.column, f.reason) for f in report.faults] == [
        (
            "dd.csv",
            6,
            too_long,
            "a variable name is 1-64 of a-z, 0-9 and '_', starting with a letter",
        )
    ]
