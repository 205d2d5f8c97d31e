"""Every REDCap project shape imports (`redcap_projects`): classic, two arms, repeating
instruments (classic and longitudinal), repeating events, data access group and survey
columns; a dry run writes nothing, and importing the same files again changes nothing.

Participants are found by their visits and values, never by assuming a code is the record ID."""

from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from redcap_projects import SHAPES, Project, Row, classic

from biobank.db import uow
from biobank.services import studies
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, ImportReport

WRITTEN = ("participant", "visit", "phenotype_value")


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


def _state(engine) -> tuple[dict[str, int], str | None]:
    """The rows an import writes, counted, and the audit chain's tail."""
    with engine.connect() as connection:
        counts = {
            t: connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in WRITTEN
        }
        tail = connection.execute(
            sa.text("SELECT hash FROM audit_entry ORDER BY id DESC LIMIT 1")
        ).scalar_one_or_none()
    return counts, tail


def _text(number: float | None, text: str | None, day: date | str | None) -> str:
    if number is not None:
        return str(int(number)) if number == int(number) else str(number)
    return str(text if text is not None else day)


def _participants(engine) -> list[tuple[dict[str, date], set[tuple[str, str, str]]]]:
    """Each participant's visits (label → date) and visit values (label, variable, value)."""
    with engine.connect() as connection:
        visits = connection.execute(
            sa.text("SELECT participant_id, label, visit_date FROM visit")
        ).all()
        values = connection.execute(
            sa.text(
                "SELECT v.participant_id, vi.label, pv.name, v.value_number, v.value_text, "
                "v.value_date FROM phenotype_value v JOIN visit vi ON vi.id = v.visit_id "
                "JOIN phenotype_variable pv ON pv.id = v.variable_id"
            )
        ).all()
    found: dict[int, tuple[dict[str, date], set[tuple[str, str, str]]]] = {}
    for participant, label, day in visits:
        found.setdefault(participant, ({}, set()))[0][label] = date.fromisoformat(str(day))
    for participant, label, name, number, text, day in values:
        found[participant][1].add((label, name, _text(number, text, day)))
    return list(found.values())


def _expected_people(project: Project, found) -> None:
    """Each record is one participant with exactly its visits, holding its values."""
    by_visits = {frozenset(v.items()): values for v, values in found}
    assert len(by_visits) == len(found) == len(project.visits)
    for record, visits in project.visits.items():
        values = by_visits.get(frozenset(visits.items()))
        assert values is not None, (record, visits, [v for v, _ in found])
        assert project.values[record] <= values, record


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_shape_imports_and_again_changes_nothing(engine, admin, study, tmp_path, shape):
    project = SHAPES[shape]()
    files = project.write(tmp_path, bom=shape == "classic", crlf=shape != "two_arm")
    before = _state(engine)
    dry = _plan(engine, admin, files, write=False)
    assert dry.faults == [], dry.faults[:3]
    assert _state(engine) == before  # a dry run writes nothing
    visits = sum(len(v) for v in project.visits.values())
    assert dry.participants == Counts(added=len(project.visits))
    assert dry.visits == Counts(added=visits)
    written = _plan(engine, admin, files, write=True)
    assert (written.participants, written.visits) == (dry.participants, dry.visits)
    assert written.values == dry.values
    _expected_people(project, _participants(engine))
    after = _state(engine)
    assert after[0]["visit"] == visits
    again = _plan(engine, admin, files, write=True)
    assert again.faults == []
    assert again.participants == Counts(unchanged=len(project.visits))
    assert again.visits == Counts(unchanged=visits)
    assert again.values == Counts(unchanged=written.values.added)
    assert _state(engine) == after


def test_a_classic_project_names_its_date_and_its_visit(engine, admin, study, tmp_path):
    project = classic()
    files = project.write(tmp_path)
    report = _plan(engine, admin, files, write=False)
    assert any("visits dated by enrol_date" in n for n in report.notices), report.notices
    (tmp_path / "mapping.toml").write_text('classic_label = "Intake"\n', encoding="utf-8")
    mapping = redcap.redcap_mapping(tmp_path / "mapping.toml")
    _plan(engine, admin, files, write=True, mapping=mapping)
    labels = Counter(label for visits, _ in _participants(engine) for label in visits)
    assert labels == {"intake": 5}


def test_a_row_without_its_date_or_repeat_is_a_fault_of_that_row(engine, admin, study, tmp_path):
    project = classic()
    del project.rows[1].cells["enrol_date"]  # record 2: no date at all
    project.rows[2].cells["enrol_date"] = "2024-13-01"  # record 3: a wrong one, told once
    first = project.rows[0]
    project.repeating = True
    project.rows.append(Row(first.record, {"shape_weight": "1"}, form="visits", instance=2))
    project.rows.append(Row(first.record, {"shape_weight": "1"}, form="enrolment", instance=0))
    before = _state(engine)
    report = _plan(engine, admin, project.write(tmp_path), write=True)
    assert _state(engine) == before
    faults = {(f.row, f.column): f.reason for f in report.faults}
    assert "needs its date" in faults[2, "visit_date"]
    assert "needs its date" in faults[3, "visit_date"] and (3, "enrol_date") in faults
    assert faults[6, "redcap_repeat_instrument"] == "not a form of the data dictionary"
    assert faults[7, "redcap_repeat_instance"] == "a repeat instance is a whole number from 1"
    assert len(report.faults) == len(faults) == 5
