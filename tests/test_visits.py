"""One visit by any spelling of its name (a legacy sheet's `month_6`, REDCap's `month_6_arm_1`,
a technician's `Month 6`), and an admin's merge of two visits that are one."""

import json
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from inventory import participant_with_visit, seed_inventory, serum

from biobank.db import uow
from biobank.domain.visits import canonical_visit_label
from biobank.domain.vocabulary import Role
from biobank.errors import AlreadyExists, NotFound, PermissionDenied, ValidationError
from biobank.models import Specimen, Visit
from biobank.services import (
    audit,
    kits,
    participants,
    phenotypes,
    studies,
)
from biobank.services.imports import legacy as legacy_import
from biobank.services.imports import redcap as redcap_import

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    "spelling", ["Month_6", "month 6", "month-6", " MONTH  6 ", "month_6_arm_2"]
)
def test_spellings_of_one_visit(spelling):
    assert canonical_visit_label(spelling) == "month 6"


@given(st.text())
def test_canonical_labels_are_canonical(text):
    once = canonical_visit_label(text)
    assert canonical_visit_label(once) == once
    assert once == once.strip() and "  " not in once and "_" not in once


def test_an_import_finds_the_visit_another_made(engine, admin):
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
    for check, write in (
        (
            lambda s: legacy_import.check_inventory(
                s,
                actor=admin,
                path=DATA / "legacy_month_6.csv",
                study="SLE",
                sheet=legacy_import.sheet_format(),
            ),
            legacy_import.write_inventory,
        ),
        (
            lambda s: redcap_import.check_redcap(
                s,
                actor=admin,
                dictionary=DATA / "redcap" / "redcap_data_dictionary.csv",
                records=DATA / "redcap" / "redcap_records.csv",
            ),
            redcap_import.write_redcap,
        ),
    ):
        with uow(engine) as session:
            plan = check(session)
            assert plan.report.faults == [], plan.report.faults[:5]
            write(session, actor=admin, plan=plan)
    with uow(engine, readonly=True) as session:
        person = participants.show_participant(session, actor=admin, code="SLE0001")
        tubes = session.execute(sa.select(Specimen.visit_id)).scalars().all()
    labels = [v.label for v in person.visits]
    assert labels.count("month 6") == 1 and labels.count("baseline") == 1
    month_6 = next(v for v in person.visits if v.label == "month 6")
    assert month_6.id in tubes


def _older_visit(engine, label: str, day=date(2025, 1, 2)) -> None:
    """A visit labelled as imports before canonical labels left it."""
    with uow(engine) as session:
        person = participants.get_participant_row(session, "SLE-0001")
        session.execute(
            sa.insert(Visit).values(participant_id=person.id, label=label, visit_date=day)
        )


def test_two_stored_visits_that_are_one_are_named_not_chosen(engine, admin):
    seed_inventory(engine, admin)
    _older_visit(engine, "month_6")
    with uow(engine) as session:  # one of that form: found by any spelling
        assert serum(session, admin, visit="Month 6").visit_label == "month_6"
        with pytest.raises(AlreadyExists, match="already has a visit 'month_6'"):
            participants.add_visit(
                session,
                actor=admin,
                participant="SLE-0001",
                label="month-6",
                visit_date=date(2025, 1, 2),
            )
    _older_visit(engine, "month-6")
    with uow(engine) as session:
        with pytest.raises(ValidationError, match="visits 'month-6' and 'month_6', all 'month 6'"):
            serum(session, admin, visit="Month 6")
        assert serum(session, admin, visit="month-6").visit_label == "month-6"  # as written


def _two_visits(engine, admin) -> None:
    """SLE-0001's baseline (a serum tube, a C3 of 90, a kit) and its duplicate `baseline_`
    (a serum tube, a C3 and a C4, a kit)."""
    seed_inventory(engine, admin)
    _older_visit(engine, "baseline_")
    with uow(engine) as session:
        for visit in ("baseline", "baseline_"):
            serum(session, admin, visit=visit)
            kits.reserve_kit(session, actor=admin, participant="SLE-0001", visit=visit, count=1)
            phenotypes.set_value(
                session,
                actor=admin,
                participant="SLE-0001",
                variable="c3",
                value="90",
                visit=visit,
            )
        phenotypes.set_value(
            session,
            actor=admin,
            participant="SLE-0001",
            variable="c4",
            value="20",
            visit="baseline_",
        )


def _merge(engine, actor, keep="baseline", merge="baseline_"):
    with uow(engine) as session:
        return participants.merge_visits(
            session,
            actor=actor,
            participant="SLE-0001",
            keep=keep,
            merge=merge,
            reason="one visit, two spellings",
        )


def test_a_merge_moves_everything_to_the_visit_kept(engine, admin):
    _two_visits(engine, admin)
    done = _merge(engine, admin)
    assert (done.kept.label, done.merged.label) == ("baseline", "baseline_")
    assert (done.specimens, done.phenotype_values, done.reserved_accessions) == (1, 1, 1)
    assert done.dropped_values == 1  # the C3s were equal
    with uow(engine, readonly=True) as session:
        person = participants.show_participant(session, actor=admin, code="SLE-0001")
        values = phenotypes.participant_phenotypes(session, actor=admin, participant="SLE-0001")
        tubes = session.execute(sa.select(Specimen.visit_id)).scalars().all()
        kit_visits = session.execute(sa.text("SELECT visit_id FROM reserved_accession")).scalars()
        kit_visits = set(kit_visits)
        (entry,) = audit.audit_log(
            session, actor=admin, entity="visit", entity_id=str(done.kept.id)
        )[:1]
        audit.verify_chain(session, actor=admin)
    assert [v.label for v in person.visits] == ["baseline"]
    assert tubes == [done.kept.id] * 2 and kit_visits == {done.kept.id}
    assert {(v.variable, v.visit) for v in values} == {("c3", "baseline"), ("c4", "baseline")}
    assert entry.action == "visit.merge" and entry.reason == "one visit, two spellings"
    assert entry.before["merged"]["label"] == "baseline_" and entry.after["specimen"] == 1


def test_a_merge_refuses_different_values_of_one_variable(engine, admin):
    _two_visits(engine, admin)
    with uow(engine) as session:
        phenotypes.set_value(
            session,
            actor=admin,
            participant="SLE-0001",
            variable="c3",
            value="120",
            visit="baseline_",
        )
    with pytest.raises(ValidationError, match="different values of c3") as refused:
        _merge(engine, admin)
    assert refused.value.field == "variable"


def test_a_merge_is_an_admins_and_of_one_participants_visits(engine, admin, actors):
    _two_visits(engine, admin)
    with pytest.raises(PermissionDenied):
        _merge(engine, actors[Role.technician])
    with uow(engine) as session:
        participant_with_visit(
            session, admin, "SLE-0002", label="flare", visit_date=date(2025, 1, 3)
        )
    with pytest.raises(NotFound, match="SLE-0001 has no visit 'flare'"):
        _merge(engine, admin, merge="flare")
    with pytest.raises(ValidationError, match="are one visit"):
        _merge(engine, admin, merge="Baseline")


def test_the_merge_command(demo_cli):
    def admin(*args, code=0):
        return demo_cli("-u", "admin", *args, code=code)

    person = json.loads(admin("participant", "list", "--json").stdout)[0]["code"]
    admin("visit", "add", person, "flare", "--date", "2025-01-02")
    admin("visit", "add", person, "flare 2", "--date", "2025-01-02")
    missing = admin("visit", "merge", person, "flare", "flare 2", code=2)
    assert "--reason" in missing.stderr
    done = admin("visit", "merge", person, "flare", "flare 2", "--reason", "typo", "--json")
    assert json.loads(done.stdout)["merged"]["label"] == "flare 2"
    shown = json.loads(admin("participant", "show", person, "--json").stdout)
    assert "flare 2" not in [v["label"] for v in shown["visits"]]
