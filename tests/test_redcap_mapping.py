"""The REDCap mapping language for real projects (`redcap_projects`): a field renamed, skipped
(or its form), its choices mapped (radio and checkbox, a negative code among them), sex choices
by label or by the mapping; a field of another meaning than the variable of its name imported
under the project's namespace, never merged; a consent answer turned from yes to no recorded
as a withdrawal; a record in two arms; and every mapping error naming its key and value."""

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from import_checks import (
    audit_since,
    expect_people,
    last_audit_id,
    participants_found,
    written_state,
)
from redcap_projects import (
    Field,
    Project,
    Row,
    checkbox_negative,
    classic,
    consent_change,
    race_collision,
    repeating_instrument,
    two_arm,
)

from biobank.db import uow
from biobank.errors import ConsentDenied, ValidationError
from biobank.services import consent_checks, participants, phenotype_variables, phenotypes, studies
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, ImportReport


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap mapping")


def _mapping(tmp_path: Path, text: str) -> redcap.RedcapMapping:
    path = tmp_path / "map.toml"
    path.write_text(text, encoding="utf-8")
    return redcap.redcap_mapping(path)


def _run(
    engine, admin, project: Project, folder: Path, mapping: str | None = None, *, write=True
) -> ImportReport:
    """Check the project's files (as REDCap writes them) with the mapping; write them when
    nothing is faulty and `write`."""
    dictionary, records = project.write(folder)
    given = _mapping(folder, mapping) if mapping is not None else None
    with uow(engine, readonly=not write) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=dictionary, records=records, study="RC",
            mapping=given,
        )  # fmt: skip
        if write and not plan.report.faults:
            return redcap.write_redcap(session, actor=admin, plan=plan)
        return plan.report


def _person(engine, admin, record: str) -> tuple[str, dict[tuple[str, str | None], object]]:
    """A record's participant: its sex, and its values by (variable, visit)."""
    with uow(engine, readonly=True) as session:
        person = participants.show_participant(session, actor=admin, study="RC", record=record)
        values = phenotypes.participant_phenotypes(session, actor=admin, participant=person.code)
    return person.sex, {(v.variable, v.visit): v.value for v in values}


def _variables(engine) -> dict[str, list[str] | None]:
    """Variable → its choice codes."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, choices FROM phenotype_variable")).all()
    decoded = [(n, json.loads(c) if isinstance(c, str) else c) for n, c in rows]
    return {n: [c["code"] for c in choices] if choices else None for n, choices in decoded}


# --- New shapes: imported, again, and changed ---------------------------------------------------

NIH_MAPPING = """
[fields.race]
variable = "race_nih"
[fields.ethnicity]
choices = { "1" = "yes", "2" = "No", "Unknown / Not Reported" = "unknown" }
"""
SIGNS_MAPPING = """
[fields.shape_signs]
choices = { "1" = "fever", "2" = "rash", "-99" = "unknown" }
[fields.shape_worst]
variable = "worst_sign"
choices = { "-99" = "unknown", "Fever" = "fever", "2" = "rash" }
"""


def _change(project: Project, record: str, field: str, value: object) -> None:
    row = next(r for r in project.rows if r.record == record)
    row.cells[field] = value  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("shape", "mapping", "change", "changed"),
    [
        (race_collision, None, ("N-2", "race", ["3"]), ("rc__race", None)),
        (race_collision, NIH_MAPPING, ("N-1", "ethnicity", "3"), ("ethnicity", None)),
        (consent_change, None, ("C-1", "shape_weight", "70"), ("shape_weight", "enrolment")),
        (
            checkbox_negative,
            None,
            ("K-2", "shape_signs", ["2", "-99"]),
            ("shape_signs", "enrolment"),
        ),
        (
            checkbox_negative,
            SIGNS_MAPPING.split("[fields.shape_worst]")[0],  # the checkbox's codes mapped
            ("K-1", "shape_signs", ["1", "2"]),
            ("shape_signs", "enrolment"),
        ),
    ],
    ids=["race_collision", "race_mapped", "consent_change", "checkbox", "checkbox_mapped"],
)
def test_each_shape_imports_again_changes_nothing_and_a_change_is_that_change(
    engine, admin, study, tmp_path, shape, mapping, change, changed
):
    project = shape()
    report = _run(engine, admin, project, tmp_path, mapping)
    assert report.faults == [], report.faults[:3]
    assert report.participants == Counts(added=len(project.visits))
    expect_people(project, participants_found(engine))
    state = written_state(engine)
    again = _run(engine, admin, project, tmp_path, mapping)
    assert again.faults == [] and again.values == Counts(unchanged=report.values.added)
    assert again.consents == Counts(unchanged=report.consents.added)
    assert written_state(engine) == state  # not one row, not one audit entry
    record, field, value = change
    before = _person(engine, admin, record)[1]
    _change(project, record, field, value)
    since = last_audit_id(engine)
    changed_report = _run(engine, admin, project, tmp_path, mapping)
    assert changed_report.values == Counts(changed=1, unchanged=report.values.added - 1)
    assert changed_report.participants == Counts(unchanged=len(project.visits))
    assert [action for action, *_ in audit_since(engine, since)] == ["phenotype_value.change"]
    after = _person(engine, admin, record)[1]
    assert {k for k in after if after[k] != before.get(k)} == {changed}


# --- Collisions ---------------------------------------------------------------------------------


def test_a_field_of_another_meaning_goes_to_the_project_namespace(engine, admin, study, tmp_path):
    report = _run(engine, admin, race_collision(), tmp_path)
    assert report.faults == []
    assert [n for n in report.notices if "imported as" in n] == [
        "race is imported as the variable rc__race, not as race, which is another meaning "
        "here: it is of type choice, the field multi_choice",
        "ethnicity is imported as the variable rc__ethnicity, not as ethnicity, which is another "
        "meaning here: it has no choice for 1, Hispanic or Latino; 2, Not Hispanic or Latino; "
        "3, Unknown / Not Reported",
    ]
    _, values = _person(engine, admin, "N-2")
    assert values[("rc__race", None)] == ["3", "5"] and values[("rc__ethnicity", None)] == "1"
    assert ("race", None) not in values and ("ethnicity", None) not in values
    assert _person(engine, admin, "N-3")[0] == "unknown"  # "Unknown or Not Reported"
    variables = _variables(engine)
    assert variables["rc__race"] == ["1", "2", "3", "4", "5", "6"]
    assert variables["race"] == ["white", "black", "asian", "aian", "nhpi", "multiple", "unknown"]
    with uow(engine, readonly=True) as session:  # the lupus variables hold nothing of it
        lupus = phenotypes.stored_values(
            session,
            variables=[
                phenotype_variables.get_variable(session, n).id for n in ("race", "ethnicity")
            ],
            participants=_participant_ids(engine),
            participant_level=True,
        )
        assert list(lupus) == []


def _participant_ids(engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT id FROM participant")).scalars())


def test_the_mapping_names_the_namespace(engine, admin, study, tmp_path):
    report = _run(engine, admin, race_collision(), tmp_path, 'namespace = "NIH"\n')
    assert report.faults == [] and report.variables == Counts(added=4)
    assert {"nih__race", "nih__ethnicity", "shape_bmi"} <= _variables(engine).keys()
    assert "rc__race" not in _variables(engine)


def test_a_field_the_mapping_sends_to_a_variable_it_is_not_is_the_mappings_fault(
    engine, admin, study, tmp_path
):
    state = written_state(engine)
    wrong = '[fields.race]\nvariable = "race"\n[fields.ethnicity]\nchoices = { "1" = "yes" }\n'
    report = _run(engine, admin, race_collision(), tmp_path, wrong)
    assert [(f.file, f.line, f.column, f.value, f.reason) for f in report.faults] == [
        (
            "map.toml",
            None,
            "fields.race.variable",
            "checkbox",
            "the variable race is of type choice here; the dictionary makes it multi_choice",
        ),
        (
            "map.toml",
            None,
            "fields.ethnicity.choices",
            "2, Not Hispanic or Latino",
            "ethnicity: the choice 2, Not Hispanic or Latino is none of the variable's (no (No), "
            "yes (Yes), unknown (Unknown))",
        ),
        (
            "map.toml",
            None,
            "fields.ethnicity.choices",
            "3, Unknown / Not Reported",
            "ethnicity: the choice 3, Unknown / Not Reported is none of the variable's (no (No), "
            "yes (Yes), unknown (Unknown))",
        ),
    ]
    assert written_state(engine) == state


# --- Rename, skip, choices ----------------------------------------------------------------------


def test_the_mapping_renames_and_maps_choices_onto_a_variable(engine, admin, study, tmp_path):
    report = _run(engine, admin, race_collision(), tmp_path, NIH_MAPPING)
    assert report.faults == [] and not [n for n in report.notices if "imported as" in n]
    assert _variables(engine)["race_nih"] == ["1", "2", "3", "4", "5", "6"]
    expected = {"N-1": ("female", "no"), "N-2": ("male", "yes"), "N-3": ("unknown", "unknown")}
    for record, (sex, ethnicity) in expected.items():
        found_sex, values = _person(engine, admin, record)
        assert (found_sex, values[("ethnicity", None)]) == (sex, ethnicity)
    assert _person(engine, admin, "N-2")[1][("race_nih", None)] == ["3", "5"]


def test_checkbox_and_radio_choices_map_a_negative_code(engine, admin, study, tmp_path):
    project = checkbox_negative()
    assert "shape_signs____99" in project.columns()
    report = _run(engine, admin, project, tmp_path, SIGNS_MAPPING)
    assert report.faults == []
    variables = _variables(engine)
    assert variables["shape_signs"] == variables["worst_sign"] == ["fever", "rash", "unknown"]
    assert "shape_worst" not in variables
    expected = {"K-1": (["fever", "unknown"], "fever"), "K-3": (["unknown"], "unknown")}
    for record, (signs, worst) in expected.items():
        values = _person(engine, admin, record)[1]
        assert values[("shape_signs", "enrolment")] == signs
        assert values[("worst_sign", "enrolment")] == worst


def test_a_skipped_field_and_form_are_not_imported(engine, admin, study, tmp_path):
    project = race_collision()
    project.fields.append(Field("nt_comment", "notes", label="Comment"))
    for row in project.rows:
        row.cells["nt_comment"] = "seen"
    mapping = 'skip_forms = ["notes"]\n' + NIH_MAPPING + "[fields.shape_bmi]\nskip = true\n"
    report = _run(engine, admin, project, tmp_path, mapping)
    assert report.faults == []
    assert "fields the mapping skips: shape_bmi, nt_comment" in report.notices
    assert report.variables == Counts(added=2, unchanged=1)  # race_nih, enrol_date; ethnicity
    variables = _variables(engine)
    assert "shape_bmi" not in variables and "nt_comment" not in variables
    _, values = _person(engine, admin, "N-1")
    assert {variable for variable, _ in values} == {"race_nih", "ethnicity", "enrol_date"}


def test_the_rows_of_a_skipped_repeating_form_are_left_alone(engine, admin, study, tmp_path):
    project = repeating_instrument(longitudinal=True)
    report = _run(engine, admin, project, tmp_path, 'skip_forms = ["medications"]\n')
    assert report.faults == []
    assert report.visits == Counts(added=2)  # each record's baseline, no medication visits
    assert Counter(label for visits, _ in participants_found(engine) for label in visits) == {
        "baseline": 2
    }
    assert "med_name" not in _variables(engine)


# --- Sex ----------------------------------------------------------------------------------------


def _sexed(choices: str, codes: dict[str, str]) -> Project:
    """The classic project with other sex choices, records' sex codes as given."""
    project = classic(tuple(codes))
    project.fields[1] = Field("sex", "demographics", "radio", choices=choices)
    for row in project.rows:
        row.cells["sex"] = codes[row.record]
    return project


GENDERS = "1, Woman | 2, Man | 3, Intersex | 4, Non-binary | 5, Prefer not to say | 6, Two-spirit"


def test_sex_choices_map_by_label_and_else_by_the_mapping(engine, admin, study, tmp_path):
    project = _sexed(GENDERS, {"1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6"})
    refused = _run(engine, admin, project, tmp_path, write=False)
    assert [(f.line, f.column, f.value, f.reason) for f in refused.faults] == [
        (
            3,
            "sex",
            "Two-spirit",
            "sex: the choice 6, Two-spirit is not a sex (female, male, unknown, "
            "undifferentiated, other); map it in the mapping's [fields.sex] choices",
        )
    ]
    report = _run(engine, admin, project, tmp_path, '[fields.sex]\nchoices = { "6" = "other" }\n')
    assert report.faults == []
    sexes = {record: _person(engine, admin, record)[0] for record in project.visits}
    assert sexes == {
        "1": "female", "2": "male", "3": "undifferentiated", "4": "other", "5": "unknown",
        "6": "other",
    }  # fmt: skip


# --- Consent changes ----------------------------------------------------------------------------


def _consent_row(project: Project, record: str) -> Row:
    return next(r for r in project.rows if r.record == record)


def _allowed(engine, record: str, use: str) -> bool:
    """Whether the consent guard of exports lets a record's data out for `use` today."""
    with engine.connect() as connection:
        pid = connection.execute(
            sa.text("SELECT participant_id FROM participant_external_id WHERE value = :record"),
            {"record": record},
        ).scalar_one()
    with uow(engine, readonly=True) as session:
        try:
            consent_checks.require_consent(
                session, participant_id=pid, uses=[use], as_of=date.today(), what="an export"
            )
        except ConsentDenied:
            return False
    return True


def test_a_consent_answer_turned_from_yes_to_no_is_a_withdrawal(engine, admin, study, tmp_path):
    project = consent_change()
    first = _run(engine, admin, project, tmp_path)
    assert first.consents == Counts(added=2) and first.documents == ["SLE-REGISTRY 3.0"]
    assert _allowed(engine, "C-1", "GENETIC")
    _consent_row(project, "C-1").cells["consent_genetic"] = "0"  # same version, same day
    state = written_state(engine)
    dry = _run(engine, admin, project, tmp_path, write=False)
    assert dry.faults == [] and dry.consents == Counts(unchanged=2, withdrawn=1)
    today = date.today()
    listed = f"record C-1 GENETIC as of {today} (consent_genetic)"
    assert f"consent withdrawn, an answer turned from yes to no: {listed}" in dry.notices
    assert written_state(engine) == state  # a dry run changes nothing
    since = last_audit_id(engine)
    done = _run(engine, admin, project, tmp_path)
    assert done.consents == dry.consents and done.values == Counts(unchanged=4)
    entries = audit_since(engine, since)
    [(action, after)] = [(e.action, e.after) for e in entries if e.action.startswith("consent")]
    assert action == "consent.withdraw"
    assert (after["statement"], after["withdrawn_on"]) == ("GENETIC", today.isoformat())
    assert after["disposition"] == "keep_no_use" and after["requested_by"] == "REDCap"
    assert not _allowed(engine, "C-1", "GENETIC")  # an export needing it leaves C-1 out
    assert _allowed(engine, "C-1", "FUTURE_RESEARCH") and _allowed(engine, "C-2", "GENETIC")
    state = written_state(engine)
    again = _run(engine, admin, project, tmp_path)  # the same files: nothing changes
    assert again.faults == [] and again.consents == Counts(unchanged=2)
    assert written_state(engine) == state


def test_a_later_signature_with_a_no_withdraws_as_of_its_date(engine, admin, study, tmp_path):
    project = consent_change()
    _run(engine, admin, project, tmp_path)
    row = _consent_row(project, "C-2")  # REDCap keeps the latest signature of the form
    row.cells |= {"consent_date": "2024-06-03", "consent_share": "0"}
    since = last_audit_id(engine)
    report = _run(engine, admin, project, tmp_path)
    assert report.faults == [] and report.consents == Counts(added=1, unchanged=1, withdrawn=1)
    actions = [
        (a, e.get("statement"), e.get("withdrawn_on")) for a, _, e, _ in audit_since(engine, since)
    ]
    assert ("consent.sign", None, None) in actions
    assert ("consent.withdraw", "DATA_SHARING", "2024-06-03") in actions
    assert not _allowed(engine, "C-2", "DATA_SHARING") and _allowed(engine, "C-2", "GENETIC")
    state = written_state(engine)
    again = _run(engine, admin, project, tmp_path)
    assert again.consents == Counts(unchanged=2) and written_state(engine) == state


def test_a_no_turned_yes_needs_a_new_signature_and_refuse_refuses(engine, admin, study, tmp_path):
    project = consent_change()
    for row in project.rows:
        row.cells["consent_commercial"] = "0"
    _run(engine, admin, project, tmp_path)
    _consent_row(project, "C-1").cells["consent_commercial"] = "1"
    state = written_state(engine)
    report = _run(engine, admin, project, tmp_path)
    [fault] = report.faults
    assert (fault.row, fault.column, fault.value) == (1, "consent_commercial", "1")
    assert fault.reason == (
        "SLE-REGISTRY 3.0 signed 2024-01-11 is recorded with other answers (COMMERCIAL); a "
        "signed consent is not changed by an import: an answer turned from no to yes needs a "
        "new signature (a new version or date)"
    )
    _consent_row(project, "C-1").cells["consent_commercial"] = "0"
    _consent_row(project, "C-2").cells["consent_genetic"] = "0"
    refuse = (
        '[consent]\ndocument = "SLE-REGISTRY"\nversion = "consent_version"\n'
        'signed_on = "consent_date"\non_change = "refuse"\n[consent.statements]\n'
        'consent_future = "FUTURE_RESEARCH"\nconsent_genetic = "GENETIC"\n'
        'consent_commercial = "COMMERCIAL"\nconsent_share = "DATA_SHARING"\n'
        'consent_recontact = "RECONTACT"\n'
    )
    refused = _run(engine, admin, project, tmp_path, refuse)
    assert [(f.row, f.column, f.value) for f in refused.faults] == [(2, "consent_genetic", "0")]
    assert refused.faults[0].reason.endswith(
        "a signed consent is not changed by an import: the mapping's [consent] on_change = "
        '"refuse" leaves a withdrawal to you'
    )
    assert written_state(engine) == state


def test_the_dry_run_command_lists_a_withdrawal(fresh_cli, tmp_path):
    fresh_cli("study", "add", "RC", "--title", "REDCap mapping")
    project = consent_change()
    dictionary, records = project.write(tmp_path)
    files = ("--dictionary", dictionary, "--records", records)
    fresh_cli("import", "redcap", *files)
    _consent_row(project, "C-2").cells["consent_recontact"] = "0"
    project.write(tmp_path)
    dry = fresh_cli("import", "redcap", *files, "--dry-run")
    assert f"record C-2 RECONTACT as of {date.today()} (consent_recontact)" in dry.stderr
    assert "1 withdrawn" in " ".join(dry.stderr.split())
    assert "dry run, nothing changed" in dry.stderr


# --- Arms ---------------------------------------------------------------------------------------


def test_a_record_in_two_arms_is_a_fault_unless_the_mapping_names_the_arms(
    engine, admin, study, tmp_path
):
    project = two_arm()
    second = Row("A-1", {"visit_date": "2024-06-01", "shape_score": "9"}, event="screening_arm_2")
    project.rows.append(second)
    state = written_state(engine)
    refused = _run(engine, admin, project, tmp_path)
    assert [(f.row, f.event, f.reason) for f in refused.faults] == [
        (
            7,
            "screening_arm_2",
            "row 1 (screening_arm_1) and this row are both visit screening of A-1: give each "
            "arm its own visits in the mapping's [arms] (or name the events in [visit_labels])",
        )
    ]
    assert written_state(engine) == state
    report = _run(engine, admin, project, tmp_path, '[arms]\n2 = "Extension"\n')
    assert report.faults == []
    labels = sorted(sorted(visits) for visits, _ in participants_found(engine))
    assert labels == [
        ["screening", "screening extension", "week 4"],
        ["screening", "week 4"],
        ["screening extension", "week 4 extension"],
    ]


# --- Mapping errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[fields.race]\nvariable = "Race-NIH"\n', "fields.race.variable must be a variable name"),
        ('[fields.race]\nskip = true\nphi = "drop"\n', "fields.race.skip leaves nothing for phi"),
        ("[fields.race]\nskip = 1\n", "fields.race.skip must be true or false"),
        ('[fields.race]\nchoices = ["1"]\n', "fields.race.choices must be a table"),
        ('[fields.race]\nchoices = { "1" = "" }\n', "fields.race.choices.1 must map a REDCap"),
        (
            '[fields.sex]\nchoices = { "3" = "nonbinary" }\n',
            "fields.sex.choices.3 is 'nonbinary', not a sex (female, male, unknown",
        ),
        (
            '[fields.sex]\nvariable = "gender"\n',
            "fields.sex.variable is for a field with no other role; sex is the sex",
        ),
        (
            '[fields.mrn]\nchoices = { "1" = "x" }\n',
            "fields.mrn.choices is for a field with no other role; mrn is the identity mrn",
        ),
        (
            '[fields.a]\nvariable = "x"\n[fields.b]\nvariable = "x"\n',
            "fields.b.variable names the variable x, as fields.a.variable does",
        ),
        ('skip_forms = "notes"\n', "skip_forms must be a list of form names"),
        ('namespace = "9x"\n', "namespace must be 1-24 of a-z, 0-9 and '_', from a letter"),
        ('[arms]\nx = "y"\n', "arms.x must be an arm's number"),
        ('[arms]\n2 = "arm 2"\n', "arms.2 ends like REDCap's own arm name"),
        ('[consent]\non_change = "ignore"\n', "consent.on_change is 'ignore', not withdraw or"),
    ],
)
def test_a_mapping_error_names_the_file_key_and_value(tmp_path, text, message):
    with pytest.raises(ValidationError) as raised:
        _mapping(tmp_path, text)
    assert raised.value.message.startswith(f"map.toml: {message}"), raised.value.message


def test_a_choice_the_field_does_not_have_is_the_mappings_fault(engine, admin, study, tmp_path):
    state = written_state(engine)
    stray = (
        '[fields.ethnicity]\nchoices = { "1" = "yes", "2" = "no", "3" = "unknown", "9" = "no" }\n'
    )
    report = _run(engine, admin, race_collision(), tmp_path, stray)
    assert [(f.file, f.column, f.value) for f in report.faults] == [
        ("map.toml", "fields.ethnicity.choices", "9")
    ]
    assert report.faults[0].reason.startswith(
        "fields.ethnicity.choices: '9' is none of the choices of ethnicity (1 (Hispanic or Latino)"
    )
    assert written_state(engine) == state
