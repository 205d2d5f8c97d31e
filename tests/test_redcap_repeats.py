"""A repeating instrument's instances, on both engines: by default dated observations within
their event's visit (instance N of each variable there, observed on the form's first date
filled, else on the visit's), or visits of their own when the mapping's `[repeats]` says so.
Re-importing changes nothing; a changed date moves its observation, a blank cell removes that
instance's value only; a visit's own value comes before its instances' at collection, then the
latest observed."""

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from import_checks import expect_people, participants_found, value_text, written_state
from redcap_projects import Project, repeating_instrument
from sqlmodel import col, select

from biobank.db import uow
from biobank.errors import ValidationError
from biobank.models import PhenotypeVariable, Visit
from biobank.services import participants, phenotypes, studies
from biobank.services.imports import redcap
from biobank.services.imports.common import Counts, ImportReport
from biobank.services.phenotype_at_collection import Collected, values_at_collection


@pytest.fixture
def study(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="RC", title="REDCap repeats")


def _import(engine, admin, project: Project, folder: Path, mapping: str | None = None):
    dictionary, records = project.write(folder)
    options = {}
    if mapping is not None:
        (folder / "mapping.toml").write_text(mapping, encoding="utf-8")
        options["mapping"] = redcap.redcap_mapping(folder / "mapping.toml")
    with uow(engine) as session:
        plan = redcap.check_redcap(
            session, actor=admin, dictionary=dictionary, records=records, study="RC", **options
        )
        if plan.report.faults:
            return plan.report
        return redcap.write_redcap(session, actor=admin, plan=plan)


def _instances(engine, record: str) -> dict[tuple[str, int], tuple[str, date]]:
    """(variable, instance) → (value, observed) of a record's repeat instances."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT pv.name, v.instance, v.value_number, v.value_text, v.value_date, "
                "v.observed_on "
                "FROM phenotype_value v JOIN phenotype_variable pv ON pv.id = v.variable_id "
                "JOIN participant_external_id x ON x.participant_id = v.participant_id "
                "WHERE x.value = :record AND v.instance > 0"
            ),
            {"record": record},
        ).all()
    return {
        (name, instance): (value_text(number, text, day), date.fromisoformat(str(on)))
        for name, instance, number, text, day, on in rows
    }


def _row(project: Project, record: str, instance: int):
    return next(r for r in project.rows if (r.record, r.instance) == (record, instance))


def test_instances_are_dated_observations_of_the_event_visit(engine, admin, study, tmp_path):
    project = repeating_instrument(longitudinal=True)
    report = _import(engine, admin, project, tmp_path / "first")
    assert report.faults == [], report.faults[:3]
    assert report.visits == Counts(added=2)  # one baseline each: no visit per instance
    expect_people(project, participants_found(engine))
    april_1, march_1, april_3 = date(2024, 4, 1), date(2024, 3, 1), date(2024, 4, 3)
    assert _instances(engine, "R-1") == {
        ("med_name", 1): ("hcq", april_1), ("med_dose", 1): ("1.5", april_1),
        ("med_start", 1): ("2024-04-01", april_1),
        ("med_name", 2): ("pred", march_1),  # no start date: the visit's
        ("med_dose", 2): ("2.5", march_1),
        ("med_name", 3): ("mmf", april_3), ("med_dose", 3): ("3.5", april_3),
        ("med_start", 3): ("2024-04-03", april_3),
    }  # fmt: skip
    state = written_state(engine)
    again = _import(engine, admin, project, tmp_path / "again")
    assert again.values == Counts(unchanged=report.values.added)
    assert written_state(engine) == state  # not a row, not an audit entry


def test_a_changed_date_moves_its_observation_and_a_blank_removes_one_instance(
    engine, admin, study, tmp_path
):
    project = repeating_instrument(longitudinal=True)
    _import(engine, admin, project, tmp_path / "first")
    _row(project, "R-1", 3).cells["med_start"] = "2024-05-10"
    _row(project, "R-1", 2).cells["med_dose"] = ""
    report = _import(engine, admin, project, tmp_path / "changed")
    assert report.faults == []
    # instance 3: its start, and its name and dose observed on the new day; instance 2's dose
    assert (report.values.changed, report.values.removed) == (3, 1)
    assert [(r.field, r.instance) for r in report.removed] == [("med_dose", 2)]
    found = _instances(engine, "R-1")
    assert found["med_name", 3] == ("mmf", date(2024, 5, 10))
    assert found["med_dose", 3] == ("3.5", date(2024, 5, 10))
    assert ("med_dose", 2) not in found and found["med_name", 2] == ("pred", date(2024, 3, 1))
    assert found["med_dose", 1] == ("1.5", date(2024, 4, 1))  # another instance: untouched


def test_a_missing_code_in_an_instance_is_that_instances(engine, admin, study, tmp_path):
    project = repeating_instrument(longitudinal=True)
    _row(project, "R-1", 2).cells["med_dose"] = "UNK"
    report = _import(engine, admin, project, tmp_path / "first")
    assert report.faults == []
    with engine.connect() as connection:
        codes = connection.execute(sa.text("SELECT code, instance FROM phenotype_missing")).all()
    assert codes == [("UNK", 2)]
    state = written_state(engine, ("phenotype_value", "phenotype_missing"))
    _import(engine, admin, project, tmp_path / "again")
    assert written_state(engine, ("phenotype_value", "phenotype_missing")) == state


def test_the_mapping_can_make_instances_visits(engine, admin, study, tmp_path):
    project = repeating_instrument(longitudinal=True, observed=False)
    report = _import(engine, admin, project, tmp_path, '[repeats]\nmedications = "visit"\n')
    assert report.faults == [], report.faults[:3]
    expect_people(project, participants_found(engine))
    labels = {label for visits, _ in participants_found(engine) for label in visits}
    assert labels == {"baseline", "baseline medications #2", "baseline medications #3"}
    assert _instances(engine, "R-1") == {}


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[repeats]\nmedications = "visits"\n', "repeats.medications is 'visits', not \"obs"),
        ('repeats = ["medications"]\n', "repeats must be a table of forms"),
    ],
)
def test_a_wrong_repeats_setting_names_its_key(tmp_path, toml, expected):
    (tmp_path / "mapping.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ValidationError, match=expected.replace("[", r"\[")):
        redcap.redcap_mapping(tmp_path / "mapping.toml")


def test_a_repeats_form_not_in_the_dictionary_is_told(engine, admin, study, tmp_path):
    project = repeating_instrument(longitudinal=True)
    report: ImportReport = _import(engine, admin, project, tmp_path, '[repeats]\nmeds = "visit"\n')
    assert "the mapping's repeating form 'meds' is not in the dictionary" in report.notices


def _at_collection(engine, record: str, names: list[str]) -> dict[str, object]:
    with uow(engine, readonly=True) as session:
        participant_id, visit_id = session.execute(
            sa.text(
                "SELECT x.participant_id, v.id FROM participant_external_id x "
                "JOIN visit v ON v.participant_id = x.participant_id WHERE x.value = :record"
            ),
            {"record": record},
        ).one()
        variables = session.exec(
            select(PhenotypeVariable).where(col(PhenotypeVariable.name).in_(names))
        )
        collected = Collected(1, participant_id, visit_id, date(2024, 3, 1))
        return values_at_collection(session, specimens=[collected], variables=list(variables))[1]


def test_a_visits_own_value_comes_first_then_the_latest_observed(engine, admin, study, tmp_path):
    _import(engine, admin, repeating_instrument(longitudinal=True), tmp_path)
    assert _at_collection(engine, "R-1", ["med_name", "med_dose"]) == {
        "med_name": "mmf",  # instance 3, started 2024-04-03, the latest
        "med_dose": 3.5,
    }
    with uow(engine) as session:
        code = session.execute(
            sa.text(
                "SELECT p.code FROM participant p JOIN participant_external_id x "
                "ON x.participant_id = p.id WHERE x.value = 'R-1'"
            )
        ).scalar_one()
        phenotypes.set_value(
            session, actor=admin, participant=code, variable="med_name", value="aza",
            visit="baseline",
        )  # fmt: skip
    assert _at_collection(engine, "R-1", ["med_name"]) == {"med_name": "aza"}


def test_a_merge_renumbers_the_instances_of_the_visit_merged(engine, admin, study, tmp_path):
    _import(engine, admin, repeating_instrument(longitudinal=True), tmp_path)
    with uow(engine) as session:
        code, participant_id = session.execute(
            sa.text(
                "SELECT p.code, p.id FROM participant p JOIN participant_external_id x "
                "ON x.participant_id = p.id WHERE x.value = 'R-2'"
            )
        ).one()
        participants.add_visit(
            session, actor=admin, participant=code, label="rebaseline", visit_date=date(2024, 3, 2)
        )
        phenotypes.set_value(
            session, actor=admin, participant=code, variable="med_name", value="aza",
            visit="rebaseline", instance=1, observed_on=date(2024, 3, 2),
        )  # fmt: skip
        participants.merge_visits(
            session, actor=admin, participant=code, keep="baseline", merge="rebaseline",
            reason="one visit, two spellings",
        )  # fmt: skip
        visits = sa.select(sa.func.count()).where(Visit.participant_id == participant_id)
        assert session.execute(visits).scalar_one() == 1
    assert _instances(engine, "R-2") == {
        ("med_name", 1): ("hcq", date(2024, 4, 1)),
        ("med_dose", 1): ("1.5", date(2024, 4, 1)),
        ("med_start", 1): ("2024-04-01", date(2024, 4, 1)),
        ("med_name", 2): ("aza", date(2024, 3, 2)),  # renumbered after the kept one's
    }
