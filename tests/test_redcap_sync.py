"""Re-importing a REDCap project is a sync, on both engines: a value whose cell is blank now, in
a row that holds its form, is removed, audited with what it was and why; a missing-data code
is stored as missing with reason, never as a value (cohorts, exports and the timeline never
see it), and a value and a code replace each other, audited. A row that does not hold a form
(a repeating instrument's row, an event's row without that form) never clears its values."""

import csv
import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from import_checks import audit_since, last_audit_id, observation, value_text, written_state
from redcap_projects import MED_1, MED_2, Project, cleared_cell, missing_codes

from biobank.db import uow
from biobank.domain.cohort import CohortQuery, parse_conditions
from biobank.errors import ValidationError
from biobank.services import (
    cohorts,
    exports,
    participants,
    phenotype_missing,
    phenotype_variables,
    phenotypes,
    studies,
)
from biobank.services.exports import ExportRequest
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, Removed

TABLES = ("participant", "visit", "phenotype_value", "phenotype_missing", "audit_entry")


def _state(engine) -> tuple[dict[str, int], str | None]:
    return written_state(engine, TABLES)


IMPORTED = "REDCap import of records.csv"
CLEARED = "blank in REDCap project export records.csv"
Key = tuple[str, str | None, str]  # record, visit label (None: the participant's), variable


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap sync")


def _import(engine, admin, files: tuple[Path, Path], *, write: bool = True, **options):
    dictionary, records = files
    with uow(engine, readonly=not write) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=dictionary, records=records, study="RC", **options
        )
        if write and not plan.report.faults:
            return redcap.write_redcap(session, actor=admin, plan=plan)
        return plan.report


def _stored(engine) -> dict[Key, str]:
    """What each place holds, by REDCap record: a value as text, a code as `missing:CODE`; a
    repeat instance's place named as `observation` names it (a code's: its instance only)."""
    joins = (
        "JOIN participant_external_id x ON x.participant_id = t.participant_id "
        "LEFT JOIN visit vi ON vi.id = t.visit_id "
        "JOIN phenotype_variable pv ON pv.id = t.variable_id"
    )
    with engine.connect() as connection:
        values = connection.execute(
            sa.text(
                "SELECT x.value, vi.label, pv.name, t.value_number, t.value_text, t.value_date, "
                f"t.instance, t.observed_on FROM phenotype_value t {joins}"
            )
        ).all()
        codes = connection.execute(
            sa.text(
                "SELECT x.value, vi.label, pv.name, t.code, t.instance "
                f"FROM phenotype_missing t {joins}"
            )
        ).all()
    found = {
        (r, observation(label, i, date.fromisoformat(str(on))) if i else label, name): (
            value_text(n, t, d)
        )
        for r, label, name, n, t, d, i, on in values
    }
    for record, label, name, code, instance in codes:
        label = f"{label} [{instance}]" if instance else label
        assert (record, label, name) not in found, "a value and a code in one place"
        found[record, label, name] = f"missing:{code}"
    return found


def _expected(project: Project) -> dict[Key, str]:
    found: dict[Key, str] = {
        (record, label, name): text
        for record, values in project.values.items()
        for label, name, text in values
    }
    for record, label, name, code in getattr(project, "missing", ()):
        found[record, label, name] = f"missing:{code}"
    return found


def _row(project: Project, record: str, event: str, instance: int | None = None):
    return next(
        r for r in project.rows if (r.record, r.event, r.instance) == (record, event, instance)
    )


# --- Both shapes: imported, and again changing nothing ---------------------------------------


@pytest.mark.parametrize("shape", [missing_codes, cleared_cell], ids=lambda s: s.__name__)
def test_each_shape_imports_and_again_changes_nothing(engine, admin, study, tmp_path, shape):
    project = shape()
    files = project.write(tmp_path)
    first = _import(engine, admin, files)
    assert first.faults == [], first.faults[:3]
    stored = _stored(engine)
    assert _expected(project).items() <= stored.items()
    assert first.values == Counts(added=len(stored)) and first.removed == []
    after = _state(engine)
    dry = _import(engine, admin, files, write=False)
    again = _import(engine, admin, files)
    for report in (dry, again):
        assert report.faults == [] and report.removed == []
        assert report.participants == Counts(unchanged=first.participants.added)
        assert report.visits == Counts(unchanged=first.visits.added)
        assert report.values == Counts(unchanged=len(stored))
    assert _state(engine) == after  # no row and no audit entry more
    assert _stored(engine) == stored


# --- Missing-data codes ----------------------------------------------------------------------


def test_missing_codes_are_stored_as_missing_with_reason(engine, admin, study, tmp_path):
    project = missing_codes()
    last = last_audit_id(engine)
    _import(engine, admin, project.write(tmp_path))
    stored = _stored(engine)
    assert {k: v for k, v in stored.items() if v.startswith("missing:")} == {
        (r, label, name): f"missing:{code}" for r, label, name, code in project.missing
    }
    assert stored["M-1", "baseline", "shape_grade"] == "UNK"  # the field's own choice
    assert stored["M-1", "baseline", "shape_weight"] == "61.5"
    with engine.connect() as connection:
        texts = connection.execute(sa.text("SELECT value_text FROM phenotype_value")).scalars()
        assert not {"NASK", "NA"} & set(texts)  # never a value
    added = [a for action, _, a, _ in audit_since(engine, last) if action.startswith("phenotype_m")]
    assert sorted((a["variable"], a["visit"] or "", a["code"]) for a in added) == sorted(
        (name, label or "", code) for _, label, name, code in project.missing
    )


def test_a_code_and_a_value_replacing_each_other_is_exactly_that_change(
    engine, admin, study, tmp_path
):
    project = missing_codes()
    _import(engine, admin, project.write(tmp_path / "first"))
    before = _stored(engine)
    m1, m1_m6 = _row(project, "M-1", "baseline_arm_1"), _row(project, "M-1", "month_6_arm_1")
    m2 = _row(project, "M-2", "baseline_arm_1")
    m2.cells["shape_score"] = "UNK"  # a value → a code
    m1.cells["shape_score"] = "5"  # a code → a value
    m1_m6.cells["shape_weight"] = "NASK"  # a code → another
    m2.cells["shape_weight"] = ""  # a code → blank: removed
    m1.cells["shape_onset"] = "2016-02-03"  # participant-level: a code → a value
    m1.cells["shape_symptoms"] = ["2"]  # a checkbox: a code → a value
    m1_m6.cells["shape_symptoms"] = ["UNK"]  # a checkbox: a value → a code
    files = project.write(tmp_path / "changed")
    state = _state(engine)
    dry = _import(engine, admin, files, write=False)
    assert _state(engine) == state  # a dry run writes nothing
    assert dry.values == Counts(changed=6, removed=1, unchanged=len(before) - 7)
    gone = Removed(
        row=3, record="M-2", event="baseline_arm_1", instance=None, field="shape_weight",
        value="NA",
    )  # fmt: skip
    assert dry.removed == [gone]
    last = last_audit_id(engine)
    done = _import(engine, admin, files)
    assert (done.values, done.removed) == (dry.values, dry.removed)
    expected = before | {
        ("M-2", "baseline", "shape_score"): "missing:UNK",
        ("M-1", "baseline", "shape_score"): "5",
        ("M-1", "month 6", "shape_weight"): "missing:NASK",
        ("M-1", None, "shape_onset"): "2016-02-03",
        ("M-1", "baseline", "shape_symptoms"): "2",
        ("M-1", "month 6", "shape_symptoms"): "missing:UNK",
    }
    del expected["M-2", "baseline", "shape_weight"]
    assert _stored(engine) == expected
    entries = audit_since(engine, last)
    changes = Counter((action, (a or b)["variable"], reason) for action, b, a, reason in entries)
    replaced = "a value recorded in its place"
    assert changes == Counter(
        {
            ("phenotype_value.remove", "shape_score", IMPORTED): 1,
            ("phenotype_missing.add", "shape_score", IMPORTED): 1,
            ("phenotype_missing.remove", "shape_score", replaced): 1,
            ("phenotype_value.add", "shape_score", None): 1,
            ("phenotype_missing.change", "shape_weight", IMPORTED): 1,
            ("phenotype_missing.remove", "shape_weight", CLEARED): 1,
            ("phenotype_missing.remove", "shape_onset", replaced): 1,
            ("phenotype_value.add", "shape_onset", None): 1,
            ("phenotype_missing.remove", "shape_symptoms", replaced): 1,
            ("phenotype_value.add", "shape_symptoms", None): 1,
            ("phenotype_value.remove", "shape_symptoms", IMPORTED): 1,
            ("phenotype_missing.add", "shape_symptoms", IMPORTED): 1,
        }
    )
    [(_, was, now, _)] = [e for e in entries if e[0] == "phenotype_missing.change"]
    assert (was["code"], now["code"], now["visit"]) == ("UNK", "NASK", "month 6")
    [(_, was, now, _)] = [
        e for e in entries if e[0] == "phenotype_value.remove" and e[1]["variable"] == "shape_score"
    ]
    assert (was["value_number"], was["visit"], now) == (3, "baseline", None)
    state = _state(engine)
    again = _import(engine, admin, files)
    assert again.values == Counts(unchanged=len(expected)) and _state(engine) == state


def test_an_unknown_code_in_a_typed_field_is_still_a_fault(engine, admin, study, tmp_path):
    project = missing_codes()
    _row(project, "M-1", "baseline_arm_1").cells["shape_score"] = "XYZ"
    _row(project, "M-2", "baseline_arm_1").cells["shape_symptoms"] = ["1", "NASK"]
    state = _state(engine)
    report = _import(engine, admin, project.write(tmp_path))
    assert _state(engine) == state
    faults = {(f.row, f.record, f.event, f.column, f.value): f.reason for f in report.faults}
    assert "is not a number" in faults[1, "M-1", "baseline_arm_1", "shape_score", "XYZ"]
    ticked = faults[3, "M-2", "baseline_arm_1", "shape_symptoms___nask", "1"]
    assert "NASK is ticked with another box" in ticked
    assert len(faults) == 2


def test_a_project_declares_its_own_codes(engine, admin, study, tmp_path):
    """Codes the mapping declares replace REDCap's standard set: `-99` is one, `UNK` not."""
    project = missing_codes()
    project.codes = ("-99", "NASK")  # the checkbox's extra columns: shape_symptoms____99, …
    m1 = _row(project, "M-1", "baseline_arm_1")
    m1.cells["shape_symptoms"] = ["-99"]
    m2 = _row(project, "M-2", "baseline_arm_1")
    m2.cells |= {"shape_score": "-99", "shape_grade": "1", "shape_weight": "70"}
    _row(project, "M-1", "month_6_arm_1").cells["shape_weight"] = "-99"
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('missing_codes = "-99, Refused | NASK, Not asked"\n', encoding="utf-8")
    own = redcap.redcap_mapping(mapping)
    report = _import(engine, admin, project.write(tmp_path / "files"), mapping=own)
    assert [(f.row, f.column, f.value) for f in report.faults] == [(1, "shape_onset", "UNK")]
    m1.cells["shape_onset"] = "2010-01-01"
    done = _import(engine, admin, project.write(tmp_path / "fixed"), mapping=own)
    assert done.faults == []
    stored = _stored(engine)
    assert stored["M-2", "baseline", "shape_score"] == "missing:-99"
    assert stored["M-1", "month 6", "shape_weight"] == "missing:-99"
    assert stored["M-1", "baseline", "shape_symptoms"] == "missing:-99"
    assert stored["M-1", "baseline", "shape_score"] == "missing:NASK"
    assert stored["M-1", "baseline", "shape_note"] == "NA"  # text, NA no code of this project


def test_the_mapping_declares_missing_codes(tmp_path):
    shipped = redcap.redcap_mapping().missing_codes
    assert len(shipped) == 18 and shipped["NASK"] == "Not asked" and shipped["UNK"] == "Unknown"
    path = tmp_path / "mapping.toml"
    for text, codes in (
        (
            'missing_codes = "NI, No information | -99, Refused"\n',
            {"NI": "No information", "-99": "Refused"},
        ),
        ('[missing_codes]\nNASK = "Not asked"\n', {"NASK": "Not asked"}),
        ('missing_codes = ""\n', {}),
    ):
        path.write_text(text, encoding="utf-8")
        assert redcap.redcap_mapping(path).missing_codes == codes
    for text in ('missing_codes = "NASK Not asked"\n', '[missing_codes]\n"N A" = "Not asked"\n',
                 "missing_codes = 3\n", '[missing_codes]\nNASK = ""\n'):  # fmt: skip
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValidationError, match="missing_codes"):
            redcap.redcap_mapping(path)


# --- Cleared cells -----------------------------------------------------------------------------


def test_a_cleared_cell_removes_its_value_with_its_reason(engine, admin, study, tmp_path):
    project = cleared_cell()
    _import(engine, admin, project.write(tmp_path / "first"))
    before = _stored(engine)
    _row(project, "C-1", "baseline_arm_1").cells["shape_weight"] = ""
    files = project.write(tmp_path / "cleared")
    state = _state(engine)
    dry = _import(engine, admin, files, write=False)
    gone = Removed(
        row=1, record="C-1", event="baseline_arm_1", instance=None, field="shape_weight",
        value="61.5",
    )  # fmt: skip
    assert (dry.values, dry.removed) == (Counts(unchanged=len(before) - 1, removed=1), [gone])
    assert _state(engine) == state  # the dry run lists the removal and writes nothing
    last = last_audit_id(engine)
    done = _import(engine, admin, files)
    assert (done.values, done.removed) == (dry.values, dry.removed)
    [(action, was, now, reason)] = audit_since(engine, last)
    assert (action, now, reason) == ("phenotype_value.remove", None, CLEARED)
    assert (was["variable"], was["visit"], was["value_number"]) == (
        "shape_weight",
        "baseline",
        61.5,
    )
    expected = dict(before)
    del expected["C-1", "baseline", "shape_weight"]
    assert _stored(engine) == expected
    state = _state(engine)
    again = _import(engine, admin, files)
    assert again.values == Counts(unchanged=len(expected)) and _state(engine) == state


def test_every_kind_of_cell_clears_in_a_row_holding_its_form(engine, admin, study, tmp_path):
    project = cleared_cell()
    _import(engine, admin, project.write(tmp_path / "first"))
    before = _stored(engine)
    baseline = _row(project, "C-1", "baseline_arm_1")
    baseline.cells["shape_crp"] = ""  # labs all blank, its status still filled: held
    baseline.cells["shape_onset"] = ""  # participant-level, no other row of C-1 holds it
    _row(project, "C-1", "month_6_arm_1").cells["shape_symptoms"] = []  # none ticked
    _row(project, "C-1", "baseline_arm_1", 2).cells["med_dose"] = ""  # a repeat instance's
    report = _import(engine, admin, project.write(tmp_path / "cleared"))
    assert report.values == Counts(unchanged=len(before) - 4, removed=4)
    assert {(r.field, r.row, r.instance, r.value) for r in report.removed} == {
        ("shape_crp", 1, None, "2.5"),
        ("shape_onset", 1, None, "2015-01-01"),
        ("shape_symptoms", 4, None, "Rash"),
        ("med_dose", 3, 2, "5"),
    }
    gone = {
        ("C-1", "baseline", "shape_crp"), ("C-1", None, "shape_onset"),
        ("C-1", "month 6", "shape_symptoms"), ("C-1", MED_2, "med_dose"),
    }  # fmt: skip
    assert _stored(engine) == {k: v for k, v in before.items() if k not in gone}
    # C-2's onset: blank at baseline, which holds demographics, given at month 6: kept
    assert _stored(engine)["C-2", None, "shape_onset"] == "2019-01-01"


def test_rows_without_a_form_never_clear_its_values(engine, admin, study, tmp_path):
    """Month 6 has no labs form and no medications; the medications rows hold only theirs;
    the baseline event row holds no medications: values there stay, whoever recorded them."""
    project = cleared_cell()
    files = project.write(tmp_path / "first")
    _import(engine, admin, files)
    with engine.connect() as connection:
        code = connection.execute(
            sa.text("SELECT p.code FROM participant p JOIN participant_external_id x "
                    "ON x.participant_id = p.id WHERE x.value = 'C-1'")
        ).scalar_one()  # fmt: skip
    with uow(engine) as session:
        for variable, value in (("shape_crp", "9.5"), ("med_name", "mmf")):
            phenotypes.set_value(
                session, actor=admin, participant=code, variable=variable, value=value,
                visit="month 6",
            )  # fmt: skip
    before = _stored(engine)
    assert before["C-1", MED_1, "med_name"] == "hcq"  # from the medications #1 row
    assert before["C-1", "baseline", "shape_score"] == "5"  # from the event's row
    state = _state(engine)
    again = _import(engine, admin, files)
    assert again.values.removed == 0 and again.removed == []
    assert _state(engine) == state and _stored(engine) == before
    # An export of chosen fields, without the forms' status and timestamp columns: a form is
    # held where one of its fields is filled.
    _row(project, "C-1", "month_6_arm_1").cells["shape_weight"] = ""
    records = project.write(tmp_path / "chosen")[1]
    with records.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    kept = [c for c in rows[0] if not c.endswith(("_complete", "_timestamp"))]
    with records.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    chosen = _import(engine, admin, (records.parent / "dictionary.csv", records))
    assert [(r.record, r.event, r.field) for r in chosen.removed] == [
        ("C-1", "month_6_arm_1", "shape_weight")
    ]
    del before["C-1", "month 6", "shape_weight"]
    assert _stored(engine) == before


def test_a_row_the_file_no_longer_has_removes_nothing(engine, admin, study, tmp_path):
    project = cleared_cell()
    _import(engine, admin, project.write(tmp_path / "first"))
    before = _stored(engine)
    project.rows = [r for r in project.rows if (r.record, r.event) != ("C-1", "month_6_arm_1")]
    report = _import(engine, admin, project.write(tmp_path / "fewer"))
    assert report.values.removed == 0 and _stored(engine) == before


# --- Missing codes are never data; a value and a code exclude each other ---------------------


def _select(engine, where: str) -> list[cohorts.Selected]:
    with uow(engine, readonly=True) as session:
        return list(
            cohorts.select_cohort(
                session, query=CohortQuery(phenotypes=parse_conditions(where)),
                uses=["GENETIC"], as_of=date(2026, 1, 1),
            )
        )  # fmt: skip


def test_a_missing_code_is_never_data_to_cohorts_exports_or_the_timeline(
    cohort_db, admin, tmp_path
):
    assert len(_select(cohort_db, "ln_class = II")) == 1  # P-0002 at baseline
    [row] = _select(cohort_db, "upcr = 0.3")  # the same specimen
    assert row.phenotypes["ln_class"] == "II"
    with uow(cohort_db) as session:
        person = participants.get_participant_row(session, "P-0002")
        outcome = phenotype_missing.record_missing(
            session, actor=admin, participant=person,
            variable=phenotype_variables.get_variable(session, "ln_class"),
            visit=participants.find_visit(session, person, "baseline"), code="NASK",
            source="manual", reason="not asked after all",
        )  # fmt: skip
    assert outcome.outcome == "added" and outcome.missing.code == "NASK"
    assert _select(cohort_db, "ln_class = II") == []
    [row] = _select(cohort_db, "upcr = 0.3")  # still selected, without a class
    assert row.phenotypes.get("ln_class") is None
    with uow(cohort_db) as session:
        result = exports.run_export(
            session, actor=admin, directory=tmp_path,
            request=ExportRequest(query=CohortQuery(), uses=["GENETIC"],
                                  formats=["csv", "fhir", "miabis"]),
        )  # fmt: skip
        timeline = phenotypes.participant_phenotypes(session, actor=admin, participant="P-0002")
    assert result.counts["participants"] == 3  # P-0002 is exported, without the code
    for f in result.files:
        assert b"NASK" not in (result.directory / f.name).read_bytes(), f.name
    assert "ln_class" not in {v.variable for v in timeline}


def test_a_value_and_a_code_replace_each_other_audited(cohort_db, admin):
    def place(session):
        person = participants.get_participant_row(session, "P-0001")
        return {
            "participant": person,
            "variable": phenotype_variables.get_variable(session, "upcr"),
            "visit": participants.find_visit(session, person, "month 6"),
        }

    last = last_audit_id(cohort_db)
    with uow(cohort_db) as session:
        recorded = phenotype_missing.record_missing(
            session, actor=admin, code="UNK", source="manual", **place(session)
        )
        same = phenotype_missing.record_missing(
            session, actor=admin, code="UNK", source="manual", **place(session)
        )
    assert (recorded.outcome, same.outcome) == ("added", "same")
    with uow(cohort_db) as session:
        changed = phenotypes.set_value(
            session, actor=admin, participant="P-0001", variable="upcr", value="0.4",
            visit="month 6",
        )  # fmt: skip
        with pytest.raises(ValidationError, match="names its reason"):
            phenotypes.remove_value(session, actor=admin, reason=" ", **place(session))
    assert changed.outcome == "added"  # the code gave way
    entries = audit_since(cohort_db, last)
    assert [(a, r) for a, _, _, r in entries] == [
        ("phenotype_value.remove", "missing: UNK"),
        ("phenotype_missing.add", None),
        ("phenotype_missing.remove", "a value recorded in its place"),
        ("phenotype_value.add", None),
    ]
    assert entries[0][1]["value_number"] == 0.2 and entries[2][1]["code"] == "UNK"
    with uow(cohort_db) as session:
        removed = phenotypes.remove_value(session, actor=admin, reason="wrong", **place(session))
        again = phenotypes.remove_value(session, actor=admin, reason="wrong", **place(session))
        gone = phenotype_missing.remove_missing(
            session, actor=admin, reason="wrong", **place(session)
        )
    assert (removed.display, again, gone) == ("0.4 g/g", None, None)


def test_merging_visits_moves_missing_codes(cohort_db, admin):
    """A code gives way to the other visit's value or code; else it moves with the visit."""
    with uow(cohort_db) as session:
        participants.add_visit(
            session, actor=admin, participant="P-0001", label="6 months",
            visit_date=date(2020, 9, 2),
        )  # fmt: skip
        person = participants.get_participant_row(session, "P-0001")
        kept = participants.find_visit(session, person, "month 6")
        merged = participants.find_visit(session, person, "6 months")
        for visit, name, code in ((merged, "upcr", "NASK"), (merged, "sledai2k", "UNK"),
                                  (kept, "ln_class", "NA")):  # fmt: skip
            phenotype_missing.record_missing(
                session, actor=admin, participant=person, variable=phenotype_variables.get_variable(
                    session, name), visit=visit, code=code, source="manual",
            )  # fmt: skip
        phenotypes.set_value(
            session, actor=admin, participant="P-0001", variable="ln_class", value="IV",
            visit="6 months",
        )  # fmt: skip
    with uow(cohort_db) as session:
        merge = participants.merge_visits(
            session, actor=admin, participant="P-0001", keep="month 6", merge="6 months",
            reason="one visit",
        )  # fmt: skip
    assert (merge.phenotype_values, merge.dropped_values) == (1, 2)
    with cohort_db.connect() as connection:
        codes = connection.execute(
            sa.text(
                "SELECT pv.name, m.code FROM phenotype_missing m JOIN visit v ON v.id = m.visit_id "
                "JOIN phenotype_variable pv ON pv.id = m.variable_id "
                "WHERE v.label = 'month 6' AND v.participant_id = "
                "(SELECT id FROM participant WHERE code = 'P-0001')"
            )
        ).all()
    assert codes == [("sledai2k", "UNK")]
    with uow(cohort_db) as session:
        timeline = phenotypes.participant_phenotypes(session, actor=admin, participant="P-0001")
    month6 = {v.variable: v.display for v in timeline if v.visit == "month 6"}
    assert month6 == {"upcr": "0.2 g/g", "ln_class": "IV"}


# --- The command line --------------------------------------------------------------------------


def test_cli_dry_run_lists_the_removals(fresh_cli, tmp_path):
    fresh_cli("study", "add", "RC", "--title", "REDCap sync")
    project = cleared_cell()
    dictionary, records = project.write(tmp_path / "first")
    files = ("--dictionary", dictionary, "--records", records, "--study", "RC")
    fresh_cli("import", "redcap", *files)
    _row(project, "C-2", "baseline_arm_1").cells["shape_crp"] = ""
    dictionary, records = project.write(tmp_path / "cleared")
    files = ("--dictionary", dictionary, "--records", records, "--study", "RC")
    dry = fresh_cli("import", "redcap", *files, "--dry-run")
    line = "would remove: record C-2, event baseline_arm_1, row 5, shape_crp (was 1.5; blank now)"
    assert line in dry.stderr and "1 removed" in " ".join(dry.stderr.split())
    as_json = json.loads(fresh_cli("import", "redcap", *files, "--dry-run", "--json").stdout)
    assert as_json["values"]["removed"] == 1
    assert as_json["removed"] == [
        {"row": 5, "record": "C-2", "event": "baseline_arm_1", "instance": None,
         "field": "shape_crp", "value": "1.5"}
    ]  # fmt: skip
    done = fresh_cli("import", "redcap", *files)
    assert line.replace("would remove", "removed") in done.stderr
    again = json.loads(fresh_cli("import", "redcap", *files, "--json").stdout)
    assert again["values"]["removed"] == 0 and again["removed"] == []


def test_the_cli_lists_a_participants_missing_codes_beside_the_timeline(fresh_cli, tmp_path):
    fresh_cli("study", "add", "RC", "--title", "REDCap sync")
    project = missing_codes()
    dictionary, records = project.write(tmp_path)
    fresh_cli("import", "redcap", "--dictionary", dictionary, "--records", records, "--study", "RC")
    shown = fresh_cli("participant", "show", "--study", "RC", "--record", "M-1", "--json")
    code = json.loads(shown.stdout)["code"]
    expected = {(r, visit, name, c) for r, visit, name, c in project.missing if r == "M-1"}
    listed = json.loads(fresh_cli("phenotype", "missing", code, "--json").stdout)
    assert {("M-1", m["visit"], m["variable"], m["code"]) for m in listed} == expected
    assert listed[0]["visit"] is None  # participant-level first, as the timeline
    timeline = fresh_cli("phenotype", "show", code)
    assert f"{len(expected)} values missing with reason: biobank phenotype missing" in (
        timeline.stderr
    )
    assert "NASK" not in timeline.stdout  # a code is never shown as a value
    text = fresh_cli("phenotype", "missing", code).stdout
    assert "shape_score" in text and "NASK" in text
