"""Every REDCap project shape imports (`redcap_projects`): classic, two arms, repeating
instruments (classic and longitudinal), repeating events, data access group and survey
columns; a dry run writes nothing, and importing the same files again changes nothing.

Participants are found by their visits and values, never by assuming a code is the record ID."""

from collections import Counter
from pathlib import Path

import pytest
from import_checks import (
    audit_since,
    expect_people,
    last_audit_id,
    participants_found,
    written_state,
)
from redcap_projects import SHAPES, Row, classic

from biobank.db import uow
from biobank.services import studies
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, ImportReport


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap shapes")


def _plan(engine, admin, files: tuple[Path, Path], *, write: bool, **options) -> ImportReport:
    dictionary, records = files
    with uow(engine, readonly=not write) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=dictionary, records=records, study="RC", **options
        )
        if write and not plan.report.faults:
            return redcap.write_redcap(session, actor=admin, plan=plan)
        return plan.report


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_shape_imports_and_again_changes_nothing(engine, admin, study, tmp_path, shape):
    project = SHAPES[shape]()
    files = project.write(tmp_path, bom=shape == "classic", crlf=shape != "two_arm")
    before = written_state(engine)
    dry = _plan(engine, admin, files, write=False)
    assert dry.faults == [], dry.faults[:3]
    assert written_state(engine) == before  # a dry run writes nothing
    visits = sum(len(v) for v in project.visits.values())
    assert dry.participants == Counts(added=len(project.visits))
    assert dry.visits == Counts(added=visits)
    written = _plan(engine, admin, files, write=True)
    assert (written.participants, written.visits) == (dry.participants, dry.visits)
    assert written.values == dry.values
    expect_people(project, participants_found(engine))
    after = written_state(engine)
    assert after[0]["visit"] == visits
    again = _plan(engine, admin, files, write=True)
    assert again.faults == []
    assert again.participants == Counts(unchanged=len(project.visits))
    assert again.visits == Counts(unchanged=visits)
    assert again.values == Counts(unchanged=written.values.added)
    assert written_state(engine) == after


def test_a_classic_project_names_its_date_and_its_visit(engine, admin, study, tmp_path):
    project = classic()
    files = project.write(tmp_path)
    report = _plan(engine, admin, files, write=False)
    assert any("visits dated by enrol_date" in n for n in report.notices), report.notices
    (tmp_path / "mapping.toml").write_text('classic_label = "Intake"\n', encoding="utf-8")
    mapping = redcap.redcap_mapping(tmp_path / "mapping.toml")
    _plan(engine, admin, files, write=True, mapping=mapping)
    labels = Counter(label for visits, _ in participants_found(engine) for label in visits)
    assert labels == {"intake": 5}


def test_a_row_without_its_date_or_repeat_is_a_fault_of_that_row(engine, admin, study, tmp_path):
    project = classic()
    del project.rows[1].cells["enrol_date"]  # record 2: no date at all
    project.rows[2].cells["enrol_date"] = "2024-13-01"  # record 3: a wrong one, told once
    first = project.rows[0]
    project.repeating = True
    project.rows.append(Row(first.record, {"shape_weight": "1"}, form="visits", instance=2))
    project.rows.append(Row(first.record, {"shape_weight": "1"}, form="enrolment", instance=0))
    before = written_state(engine)
    report = _plan(engine, admin, project.write(tmp_path), write=True)
    assert written_state(engine) == before
    faults = {(f.row, f.column): f.reason for f in report.faults}
    assert "needs its date" in faults[2, "visit_date"]
    assert "needs its date" in faults[3, "visit_date"] and (3, "enrol_date") in faults
    assert faults[6, "redcap_repeat_instrument"] == "not a form of the data dictionary"
    assert faults[7, "redcap_repeat_instance"] == "a repeat instance is a whole number from 1"
    assert len(report.faults) == len(faults) == 5


CHANGEABLE = ("shape_score", "shape_weight", "med_dose")  # a number in every shape


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_shape_changed_then_cleared_is_exactly_that_change(
    engine, admin, study, tmp_path, shape
):
    """A value changed in REDCap is one change, audited; then blanked, one removal."""
    project = SHAPES[shape]()
    first = _plan(engine, admin, project.write(tmp_path / "1"), write=True)
    row = next(r for r in reversed(project.rows) if set(CHANGEABLE) & r.cells.keys())
    name = next(n for n in CHANGEABLE if n in row.cells)
    row.cells[name] = "77"
    since = last_audit_id(engine)
    changed = _plan(engine, admin, project.write(tmp_path / "2"), write=True)
    assert changed.faults == []
    assert changed.values == Counts(changed=1, unchanged=first.values.added - 1)
    assert [e.action for e in audit_since(engine, since)] == ["phenotype_value.change"]
    row.cells[name] = ""
    since = last_audit_id(engine)
    cleared = _plan(engine, admin, project.write(tmp_path / "3"), write=True)
    assert cleared.values == Counts(removed=1, unchanged=first.values.added - 1)
    assert [e.action for e in audit_since(engine, since)] == ["phenotype_value.remove"]
    again = _plan(engine, admin, project.write(tmp_path / "4"), write=True)
    assert again.values == Counts(unchanged=first.values.added - 1)
    assert [e.action for e in audit_since(engine, since)] == ["phenotype_value.remove"]
