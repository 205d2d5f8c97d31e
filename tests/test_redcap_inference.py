"""A REDCap project imports with no mapping: what the mapping would say is inferred from the
data dictionary and the records (`inference`), the report says what was inferred and what was
not, and `--write-mapping` writes it as TOML that, read back, imports the same. A project of the
lupus registry's shape takes the shipped mapping, as it always has."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from import_checks import expect_people, participants_found, written_state
from redcap_projects import SHAPES, Field, Project, Row, no_dates, phi_unflagged, validation_types

from biobank.db import uow
from biobank.errors import ValidationError
from biobank.services import studies
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, ImportReport
from biobank.services.imports.redcap.inference import (
    infer_mapping,
    inferred_mapping,
    mapping_toml,
)

SAMPLES = Path(__file__).parent / "data" / "redcap"
DICTIONARY, RECORDS = SAMPLES / "redcap_data_dictionary.csv", SAMPLES / "redcap_records.csv"
PROJECTS = {
    **SHAPES,
    "phi_unflagged": phi_unflagged,
    "no_dates": no_dates,
    "validation_types": validation_types,
}
# What each project's inference takes for what (the rest of the settings: empty)
EXPECTED = {
    "classic": {"visit_date": "enrol_date", "sex": "sex", "birth_year": "birth_year"},
    "two_arm": {"visit_date": "visit_date", "sex": "sex", "birth_year": "birth_year"},
    "repeating_instrument_classic": {"visit_date": "enrol_date", "sex": "sex"},
    "repeating_instrument_longitudinal": {"visit_date": "visit_date", "sex": "sex"},
    "repeating_event": {"visit_date": "visit_date", "sex": "sex", "birth_year": "birth_year"},
    "dag_survey": {"visit_date": "visit_date", "sex": "sex", "birth_year": "birth_year"},
    "phi_unflagged": {"visit_date": "enrol_date", "sex": "sex", "birth_year": "birth_year"},
    "no_dates": {
        "record_id": "study_id",
        "visit_date": "",
        "event_dates": {"enrollment_arm_1": "date_enrolled"},
        "sex": "gender",
        "birth_year": "",
        "participant_forms": ["demographics", "baseline_data"],
        "identity": {"given_name": "first_name", "date_of_birth": "dob"},
    },
    "validation_types": {"visit_date": "vt_visit_at", "sex": "", "birth_year": ""},
}
NOT_INFERRED = {
    "no_dates": {"birth_year", "visit_date", "consent"},
    "validation_types": {"sex", "birth_year", "identity", "consent", "participant_forms"},
}


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap inference")


def _import(engine, admin, files, *, write: bool, inferred=None, **options) -> ImportReport:
    """Check the files with the mapping inferred from them (or given), and write them."""
    dictionary, records = files
    inferred = inferred or infer_mapping(dictionary, records)
    options.setdefault("mapping", inferred_mapping(inferred))
    with uow(engine, readonly=not write) as session:
        plan = redcap.check_redcap(
            session,
            actor=admin,
            dictionary=dictionary,
            records=records,
            study="RC",
            inferred=inferred,
            **options,
        )
        if write and plan.writable:
            return redcap.write_redcap(session, actor=admin, plan=plan)
        return plan.report


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_each_project_imports_with_no_mapping(engine, admin, study, tmp_path, name):
    project = PROJECTS[name]()
    files = project.write(tmp_path)
    inferred = infer_mapping(*files)
    assert inferred.mapping == "inferred"
    settings = inferred.settings
    expected = {"record_id": "record_id", "consent": {}, "fields": {}} | EXPECTED[name]
    assert {key: settings[key] for key in expected} == expected
    assert inferred.why["record_id"] == "the dictionary's first field"
    assert "consent" in inferred.not_inferred
    assert NOT_INFERRED.get(name, {"consent"}) <= inferred.not_inferred.keys()
    before = written_state(engine)
    dry = _import(engine, admin, files, write=False, inferred=inferred)
    assert dry.faults == [], dry.faults[:3]
    assert dry.inferred == inferred  # the report says what was inferred, and what not
    assert written_state(engine) == before
    visits = sum(len(v) for v in project.visits.values())
    assert (dry.participants, dry.visits) == (
        Counts(added=len(project.visits)),
        Counts(added=visits),
    )
    written = _import(engine, admin, files, write=True)
    assert written.values == dry.values and written.values.added > 0
    expect_people(project, participants_found(engine))
    after = written_state(engine)
    again = _import(engine, admin, files, write=True)
    assert again.faults == []
    assert again.participants == Counts(unchanged=len(project.visits))
    assert again.visits == Counts(unchanged=visits)
    assert again.values == Counts(unchanged=written.values.added)
    assert written_state(engine) == after


def test_undated_events_take_their_records_first_date(engine, admin, study, tmp_path):
    report = _import(engine, admin, no_dates().write(tmp_path), write=False)
    for event in ("dose_1_arm_1", "visit_1_arm_1", "final_visit_arm_1"):
        notice = f"visits of event {event} without a date of their own dated by their record's "
        assert notice + "first date" in report.notices
    assert "PHI, not imported as phenotypes" not in " ".join(report.notices)  # identity columns
    assert report.identities == Counts(added=3)


def test_a_record_without_any_date_is_a_fault_or_left_out(engine, admin, study, tmp_path):
    project = no_dates()
    del project.rows[4].cells["date_enrolled"]  # record 2's enrolment: no date in its record
    files = project.write(tmp_path)
    before = written_state(engine)
    report = _import(engine, admin, files, write=True)
    assert written_state(engine) == before
    assert {(f.row, f.record) for f in report.faults} == {(row, "2") for row in range(5, 9)}
    assert all("needs its date" in f.reason for f in report.faults)
    assert "its record has none before" in report.faults[-1].reason
    skipped = _import(engine, admin, files, write=True, skip_faulty=True)
    assert skipped.left_out.records == 1 and skipped.participants == Counts(added=2)
    del project.visits["2"]
    expect_people(project, participants_found(engine))


def test_the_lupus_samples_take_the_shipped_mapping():
    inferred = infer_mapping(DICTIONARY, RECORDS)
    assert inferred.mapping == "lupus"
    assert inferred.why == {
        "mapping": "the dictionary has every field the shipped lupus mapping names"
    }
    assert inferred_mapping(inferred) == redcap.redcap_mapping()


def _without_column(source: Path, target: Path, column: str, *, dictionary: bool) -> Path:
    with source.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    if dictionary:
        rows = [row for row in rows if row[0] != column]
    else:
        at = rows[0].index(column)
        rows = [row[:at] + row[at + 1 :] for row in rows]
    with target.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    return target


def test_a_lupus_project_without_one_field_is_inferred_alike(engine, admin, tmp_path):
    """Without an MRN the shipped mapping does not fit: the inferred one finds the rest of it,
    its consent form too."""
    files = (
        _without_column(DICTIONARY, tmp_path / "dictionary.csv", "mrn", dictionary=True),
        _without_column(RECORDS, tmp_path / "records.csv", "mrn", dictionary=False),
    )
    inferred = infer_mapping(*files)
    shipped = redcap.redcap_mapping()
    mapping = inferred_mapping(inferred)
    assert inferred.mapping == "inferred"
    assert (mapping.record_id, mapping.visit_date, mapping.sex, mapping.birth_year) == (
        shipped.record_id, shipped.visit_date, shipped.sex, shipped.birth_year,
    )  # fmt: skip
    assert mapping.participant_forms == shipped.participant_forms
    assert mapping.consent is not None and shipped.consent is not None
    assert mapping.consent.statements == shipped.consent.statements
    assert (mapping.consent.version, mapping.consent.signed_on) == (
        "consent_version",
        "consent_date",
    )
    assert inferred.why["participant_forms"] == (
        "named so: demographics; held in the first event only: classification"
    )
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap inference")
    report = _import(engine, admin, files, write=False, inferred=inferred)
    assert report.faults == [] and report.participants == Counts(added=24)
    assert report.documents == ["CONSENT 2.1", "CONSENT 3.0"]


def test_what_cannot_be_inferred_is_said(engine, admin, study, tmp_path):
    fields = [
        Field("pid", "registration"),
        Field("sex", "registration", "dropdown", choices="1, Female | 2, Male | 9, Not said"),
        Field("consent_signed", "consent_form", validation="date_ymd"),
        Field("consent_biobank", "consent_form", "yesno", label="Agrees to the biobank"),
        Field("seen_on", "visit", validation="date_dmy"),
    ]
    cells = {"sex": "9", "consent_signed": "2024-01-02", "consent_biobank": "1"}
    project = Project(fields, [Row("p1", cells | {"seen_on": "2024-01-03"})])
    files = project.write(tmp_path)
    inferred = infer_mapping(*files)
    assert inferred.settings["sex"] == "" and inferred.settings["consent"] == {}
    assert inferred.not_inferred["sex"] == (
        "sex: its choices Not said are not sexes (female, male, unknown, undifferentiated, "
        "other); map them with [fields.sex] choices"
    )
    assert inferred.not_inferred["consent"] == (
        "the form consent_form lacks a version field and a statement (FUTURE_RESEARCH, GENETIC, "
        "COMMERCIAL, DATA_SHARING, RECONTACT) for consent_biobank: map it in [consent]"
    )
    assert inferred.settings["visit_date"] == "consent_signed"  # the first date of its forms
    assert inferred.why["visit_date"] == "the first date field of its forms"
    report = _import(engine, admin, files, write=True)
    assert report.faults == [] and report.variables.added == 3  # sex and consent: variables


def test_event_dates_are_checked_as_the_visit_date(engine, admin, study, tmp_path):
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[event_dates]\nbaseline_arm_1 = ""\n', encoding="utf-8")
    with pytest.raises(ValidationError, match=r"event_dates\.baseline_arm_1 must name a REDCap"):
        redcap.redcap_mapping(wrong)
    wrong.write_text('[event_dates]\nscreening_arm_1 = "sex"\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="names the field sex for two things"):
        redcap.redcap_mapping(wrong)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        'visit_date = ""\n[event_dates]\nscreening_arm_1 = "shape_score"\n'
        'week_4_arm_1 = "visit_date"\nweek_4_arm_2 = "no_such_field"\n',
        encoding="utf-8",
    )
    files = SHAPES["two_arm"]().write(tmp_path)
    report = _import(engine, admin, files, write=False, mapping=redcap.redcap_mapping(mapping))
    assert [(f.file, f.column, f.reason) for f in report.faults] == [
        ("dictionary.csv", "shape_score",
         "shape_score (event_dates.screening_arm_1 in the mapping) must be of type date, "
         "not integer"),
        ("mapping.toml", "event_dates.week_4_arm_2",
         "no field 'no_such_field' in the data dictionary"),
    ]  # fmt: skip


# --- The command line ------------------------------------------------------------------------


@pytest.fixture
def cli(fresh_cli):
    fresh_cli("study", "add", "RC", "--title", "REDCap inference")
    return fresh_cli


def _files(tmp_path: Path, project: Project) -> tuple[str, ...]:
    dictionary, records = project.write(tmp_path / "project")
    return ("--dictionary", str(dictionary), "--records", str(records))


def test_cli_infers_writes_the_mapping_and_imports_with_it(cli, tmp_path):
    files = _files(tmp_path, no_dates())
    dry = cli("import", "redcap", *files, "--dry-run", "--json")
    report = json.loads(dry.stdout)
    assert report["inferred"]["mapping"] == "inferred"
    assert report["inferred"]["settings"]["event_dates"] == {"enrollment_arm_1": "date_enrolled"}
    assert "mapping: inferred from the project" in dry.stderr
    assert "  inferred: record_id = study_id (the dictionary's first field)" in dry.stderr
    assert "  inferred: identity.given_name = first_name (named like a given name)" in dry.stderr
    assert "  not inferred: birth_year (no integer field named" in dry.stderr
    written = tmp_path / "mapping.toml"
    done = cli("import", "redcap", *files, "--write-mapping", written)
    assert done.stdout == ""
    assert f"wrote the mapping to {written}: edit it, then import with --mapping" in done.stderr
    assert "importing" not in done.stderr  # written, and nothing imported
    assert json.loads(cli("participant", "list", "--json").stdout) == []
    text = written.read_text(encoding="utf-8")
    assert "#   birth_year: no integer field named" in text
    assert '# visit_1_arm_1 = "visit 1"' in text
    inferred = inferred_mapping(infer_mapping(*(Path(f) for f in files[1::2])))
    assert redcap.redcap_mapping(written) == dataclasses.replace(inferred, file="mapping.toml")
    again = cli("import", "redcap", *files, "--write-mapping", written, code=2)
    assert "cannot write the mapping to" in again.stderr and "it exists" in again.stderr
    assert written.read_text(encoding="utf-8") == text
    imported = json.loads(cli("import", "redcap", *files, "--mapping", written, "--json").stdout)
    assert "inferred" not in imported
    for counted in ("participants", "visits", "variables", "values", "identities"):
        assert imported[counted] == report[counted], counted
    unchanged = json.loads(cli("import", "redcap", *files, "--json").stdout)  # inferred again
    assert unchanged["values"]["unchanged"] == report["values"]["added"]
    assert unchanged["values"]["added"] == unchanged["values"]["changed"] == 0
    assert unchanged["visits"]["unchanged"] == 12


def test_cli_writes_the_mapping_given_and_checks_with_it(cli, tmp_path):
    files = ("--dictionary", str(DICTIONARY), "--records", str(RECORDS))
    shipped = tmp_path / "lupus.toml"
    dry = cli("import", "redcap", *files, "--mapping", "lupus", "--write-mapping", shipped,
              "--dry-run", "--json")  # fmt: skip
    assert json.loads(dry.stdout)["participants"]["added"] == 24
    assert redcap.redcap_mapping(shipped) == dataclasses.replace(
        redcap.redcap_mapping(), file="lupus.toml"
    )
    zero = cli("import", "redcap", *files, "--dry-run", "--json")
    assert "mapping: the shipped lupus mapping (the dictionary has every field" in zero.stderr
    assert json.loads(zero.stdout)["inferred"]["mapping"] == "lupus"
    given = tmp_path / "given.toml"
    given.write_text('participant_forms = ["demographics"]\n', encoding="utf-8")
    out = tmp_path / "given_whole.toml"
    cli("import", "redcap", *files, "--mapping", given, "--write-mapping", out)
    assert redcap.redcap_mapping(out) == dataclasses.replace(
        redcap.redcap_mapping(given), file="given_whole.toml"
    )
    assert out.read_text(encoding="utf-8").startswith("# The mapping given.toml, with the shipped")


def test_the_installed_command_writes_a_mapping_that_imports(tmp_path):
    biobank = Path(sys.executable).parent / "biobank"
    env = {**os.environ, "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'inference.db'}"}

    def run(*args) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [biobank, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done

    files = _files(tmp_path, validation_types())
    mapping = tmp_path / "written.toml"
    run("study", "add", "RC", "--title", "REDCap inference")
    checked = run("import", "redcap", *files, "--write-mapping", mapping, "--dry-run", "--json")
    assert json.loads(checked.stdout)["fault_count"] == 0
    assert "wrote the mapping to" in checked.stderr
    done = json.loads(run("import", "redcap", *files, "--mapping", mapping, "--json").stdout)
    assert done["participants"]["added"] == 2 and done["visits"]["added"] == 2
    again = json.loads(run("import", "redcap", *files, "--json").stdout)
    assert again["values"]["added"] == again["values"]["changed"] == 0
    with sa.create_engine(env["BIOBANK_DATABASE_URL"]).connect() as connection:
        days = connection.execute(sa.text("SELECT visit_date FROM visit ORDER BY 1")).scalars()
        assert [str(day) for day in days] == ["2024-02-01", "2024-02-02"]


def test_a_written_mapping_reads_back_as_inferred(tmp_path):
    """Every project's inferred mapping, written and read back, is the same mapping."""
    for name, build in sorted(PROJECTS.items()):
        inferred = infer_mapping(*build().write(tmp_path / name))
        path = tmp_path / name / "mapping.toml"
        path.write_text(mapping_toml(inferred, inferred.settings, name), encoding="utf-8")
        read = redcap.redcap_mapping(path)
        assert read == dataclasses.replace(inferred_mapping(inferred), file="mapping.toml"), name


def test_repeating_instruments_are_written_as_observations_to_edit(tmp_path):
    inferred = infer_mapping(*PROJECTS["repeating_instrument_classic"]().write(tmp_path))
    assert inferred.settings["repeats"] == {"medications": "observation"}
    written = mapping_toml(inferred, inferred.settings, "meds")
    assert '[repeats]\nmedications = "observation"' in written
    assert "inferred: repeats: medications: each instance a dated observation" in written
