"""Phenotype values: checked against the dictionary (each type), recorded with an audit entry
only when something changed, and linked to specimens at their collection."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
import sqlalchemy as sa
from inventory import FUTURE, accession_tube, seed_inventory
from sqlmodel import select

from biobank.db import uow
from biobank.domain.phenotypes import Spec, Stored, display, parse_value, typed
from biobank.domain.vocabulary import PhenotypeType, Role
from biobank.errors import NotFound, PermissionDenied, ValidationError
from biobank.models import AuditEntry, PhenotypeValue, PhenotypeVariable, Specimen
from biobank.services import (
    lineage,
    participants,
    phenotype_at_collection,
    phenotype_variables,
    phenotypes,
)
from biobank.services.phenotype_at_collection import (
    DEFAULT_WINDOW_DAYS,
    Collected,
    collection_dates_query,
    values_at_collection,
)

T = PhenotypeType
SCORE = Spec("score", T.integer, min_value=0, max_value=105)
LEVEL = Spec("level", T.decimal, min_value=0, unit="mg/dL")
FLAG = Spec("flag", T.boolean)
DAY = Spec("day", T.date)
KLASS = Spec("klass", T.choice, choices=(("III", "III"), ("neg", "Negative")))
DRUGS = Spec("drugs", T.multi_choice, choices=(("hcq", "Hydroxychloroquine"), ("mmf", "MMF")))
NOTE = Spec("note", T.text)


# --- Parsing, pure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, raw, stored",
    [
        (SCORE, "4", Stored(number=4.0)),
        (SCORE, " 105 ", Stored(number=105.0)),
        (SCORE, 7, Stored(number=7.0)),
        (SCORE, "4.0", Stored(number=4.0)),
        (LEVEL, "0.5", Stored(number=0.5)),
        (LEVEL, 12, Stored(number=12.0)),
        (FLAG, "Yes", Stored(number=1.0)),
        (FLAG, "0", Stored(number=0.0)),
        (FLAG, True, Stored(number=1.0)),
        (FLAG, "unchecked", Stored(number=0.0)),
        (DAY, "2020-01-02", Stored(day=date(2020, 1, 2))),
        (DAY, date(2019, 5, 1), Stored(day=date(2019, 5, 1))),
        (KLASS, "iii", Stored(text="III")),
        (KLASS, "negative", Stored(text="neg")),
        (DRUGS, "mmf|hcq", Stored(text="hcq|mmf")),
        (DRUGS, "MMF, hydroxychloroquine, mmf", Stored(text="hcq|mmf")),
        (DRUGS, ["hcq"], Stored(text="hcq")),
        (NOTE, "  Cafe\u0301 visit\n", Stored(text="Caf\u00e9 visit")),
    ],
)
def test_valid_values_parse_to_what_is_stored(spec, raw, stored):
    assert parse_value(spec, raw) == stored


@pytest.mark.parametrize(
    "spec, raw, words",
    [
        (SCORE, "4.5", "is not a whole number"),
        (SCORE, "four", "is not a number"),
        (SCORE, "106", "above the maximum 105"),
        (SCORE, "-1", "below the minimum 0"),
        (SCORE, True, "expected a number"),
        (LEVEL, "nan", "not a finite number"),
        (LEVEL, "-0.1", "below the minimum 0"),
        (FLAG, "maybe", "is not yes/no"),
        (DAY, "02/01/2020", "is not a date (YYYY-MM-DD)"),
        (DAY, FUTURE.isoformat(), "is in the future"),
        (KLASS, "VII", "is not one of the choices: III, neg (Negative)"),
        pytest.param(DRUGS, "hcq|ritux", "'ritux' is not one of the choices", id="bad-member"),
        (DRUGS, " | ", "a value is required"),
        (NOTE, "tab\tok but bell\x07", "control characters"),
        (NOTE, "x" * 2001, "longer than 2000"),
        (NOTE, "   ", "a value is required"),
        (SCORE, None, "a value is required"),
    ],
)
def test_invalid_values_name_the_variable_and_the_value(spec, raw, words):
    with pytest.raises(ValidationError) as raised:
        parse_value(spec, raw, row=7)
    error = raised.value
    assert error.field == spec.name and error.row == 7
    assert error.message.startswith(f"row 7: {spec.name}: ")
    assert words in error.message
    if isinstance(raw, str) and len(raw) > 2000:
        assert error.value == raw[:40] + "…"  # a long text is named by its start
    elif spec is DRUGS and raw.strip(" |"):
        assert error.value == "ritux"  # the choice at fault, not the whole list
    else:
        assert error.value == raw


def test_typed_and_display_values():
    assert typed(SCORE, Stored(number=4.0)) == 4 and isinstance(typed(SCORE, Stored(4.0)), int)
    assert display(LEVEL, Stored(number=80.5)) == "80.5 mg/dL"
    assert (typed(FLAG, Stored(number=0.0)), display(FLAG, Stored(number=1.0))) == (False, "yes")
    assert display(KLASS, Stored(text="neg")) == "Negative"
    assert typed(DRUGS, Stored(text="hcq|mmf")) == ["hcq", "mmf"]
    assert display(DRUGS, Stored(text="hcq|mmf")) == "Hydroxychloroquine, MMF"
    assert typed(DAY, Stored(day=date(2020, 1, 2))) == date(2020, 1, 2)
    assert display(SCORE, Stored()) == ""


# --- Recording values -------------------------------------------------------------------------


def _value_audit(engine) -> list[tuple[str, dict | None, dict | None]]:
    with uow(engine, readonly=True) as session:
        rows = session.execute(
            sa.select(AuditEntry.action, AuditEntry.before, AuditEntry.after)
            .where(AuditEntry.entity == "phenotype_value")
            .order_by(AuditEntry.id)
        ).all()
    return [(a, json.loads(b) if b else None, json.loads(c) if c else None) for a, b, c in rows]


def _set(engine, actor, variable, value, **kwargs):
    with uow(engine) as session:
        return phenotypes.set_value(
            session, actor=actor, participant="SLE-0001", variable=variable, value=value, **kwargs
        )


def test_set_value_adds_changes_or_leaves_alone_and_audits_only_changes(engine, admin):
    seed_inventory(engine, admin)
    added = _set(engine, admin, "sledai2k", "4", visit="Baseline")
    assert added.outcome == "added"
    assert (added.value.visit, added.value.observed_on, added.value.value) == (
        "baseline",
        date(2025, 1, 2),
        4,
    )
    assert _set(engine, admin, "SLEDAI2K", 4, visit="baseline").outcome == "same"
    changed = _set(engine, admin, "sledai2k", "6", visit="baseline")
    assert (changed.outcome, changed.value.value) == ("changed", 6)
    race = _set(engine, admin, "race", "Black or African American")
    assert (race.outcome, race.value.value, race.value.display) == (
        "added",
        "black",
        "Black or African American",
    )
    # a participant-level value keeps no visit even when one is named
    assert _set(engine, admin, "race", "black", visit="baseline").outcome == "same"
    dx = _set(engine, admin, "dx_date", "2019-05-01", observed_on=date(2019, 6, 1))
    assert (dx.value.value, dx.value.observed_on) == (date(2019, 5, 1), date(2019, 6, 1))
    entries = _value_audit(engine)
    assert [a for a, _, _ in entries] == [
        "phenotype_value.add",
        "phenotype_value.change",
        "phenotype_value.add",
        "phenotype_value.add",
    ]
    _, before, after = entries[1]
    assert (before["value_number"], after["value_number"]) == (4.0, 6.0)
    assert after["variable"] == "sledai2k" and after["visit"] == "baseline"
    with uow(engine, readonly=True) as session:
        assert session.exec(select(sa.func.count()).select_from(PhenotypeValue)).one() == 3


def test_bad_values_are_refused_by_field_and_change_nothing(engine, admin):
    seed_inventory(engine, admin)
    _set(engine, admin, "sledai2k", "4", visit="baseline")
    cases = [
        (("sledai2k", "5"), {}, ValidationError, "visit"),
        (("sledai2k", "500"), {"visit": "baseline"}, ValidationError, "sledai2k"),
        (("ln_class", "VII"), {"visit": "baseline"}, ValidationError, "ln_class"),
        (("nope", "1"), {}, NotFound, "variable"),
        (("sledai2k", "5"), {"visit": "month 99"}, NotFound, "visit"),
        (
            ("race", "white"),
            {"observed_on": FUTURE},
            ValidationError,
            "observed_on",
        ),
    ]
    for (variable, value), kwargs, error, field in cases:
        with pytest.raises(error) as raised:
            _set(engine, admin, variable, value, **kwargs)
        assert raised.value.field == field, (variable, kwargs)
    with pytest.raises(NotFound) as unknown, uow(engine) as session:
        phenotypes.set_value(
            session, actor=admin, participant="SLE-9999", variable="race", value="white"
        )
    assert unknown.value.field == "participant"
    assert [a for a, _, _ in _value_audit(engine)] == ["phenotype_value.add"]
    with uow(engine, readonly=True) as session:
        shown = phenotypes.participant_phenotypes(session, actor=admin, participant="SLE-0001")
    assert [(v.variable, v.value) for v in shown] == [("sledai2k", 4)]


def test_only_admins_record_values_everyone_reads_them(engine, actors):
    admin = actors[Role.admin]
    seed_inventory(engine, admin)
    _set(engine, admin, "c3", "80", visit="baseline")
    for role in (Role.technician, Role.pi):
        with pytest.raises(PermissionDenied):
            _set(engine, actors[role], "c3", "81", visit="baseline")
        with uow(engine, readonly=True) as session:
            shown = phenotypes.participant_phenotypes(
                session, actor=actors[role], participant="SLE-0001"
            )
            labs = phenotype_variables.list_variables(session, actor=actors[role], category="labs")
        assert [(v.variable, v.display) for v in shown] == [("c3", "80 mg/dL")]
        assert "c3" in {v.name for v in labs} and {v.category for v in labs} == {"labs"}


def test_the_timeline_puts_participant_values_first_then_visits_by_date(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        participants.add_visit(
            session, actor=admin, participant="SLE-0001", label="flare", visit_date=date(2024, 9, 1)
        )
    _set(engine, admin, "sledai2k", "4", visit="baseline")
    _set(engine, admin, "sledai2k", "12", visit="flare")
    _set(engine, admin, "dx_date", "2019-05-01", observed_on=date(2019, 6, 1))
    _set(engine, admin, "race", "asian")
    with uow(engine, readonly=True) as session:
        shown = phenotypes.participant_phenotypes(session, actor=admin, participant="sle-0001")
    # undated participant values first on both engines (PostgreSQL sorts NULL last)
    assert [(v.visit, v.variable, v.display) for v in shown] == [
        (None, "race", "Asian"),
        (None, "dx_date", "2019-05-01"),
        ("flare", "sledai2k", "12"),
        ("baseline", "sledai2k", "4"),
    ]


# --- The value at collection ------------------------------------------------------------------


def _local(day: date, hour: int = 9) -> datetime:
    """A time as typed at this workstation (its calendar day is `day`)."""
    return datetime(day.year, day.month, day.day, hour).astimezone()


def _visits_and_values(engine, admin):
    """SLE-0001: baseline 2025-01-02, month 1 2025-02-01, month 3 2025-04-01, month 9
    2025-10-01; SLEDAI at baseline (4) and month 1 (6), C3 at month 3, anti-dsDNA at
    baseline, race for the participant."""
    seed_inventory(engine, admin)
    with uow(engine) as session:
        for label, day in [
            ("month 1", date(2025, 2, 1)),
            ("month 3", date(2025, 4, 1)),
            ("month 9", date(2025, 10, 1)),
        ]:
            participants.add_visit(
                session, actor=admin, participant="SLE-0001", label=label, visit_date=day
            )
        participants.add_participant(session, actor=admin, study="SLE", code="SLE-0002")
    _set(engine, admin, "sledai2k", "4", visit="baseline")
    _set(engine, admin, "sledai2k", "6", visit="month 1")
    _set(engine, admin, "c3", "80", visit="month 3")
    _set(engine, admin, "anti_dsdna", "30", visit="baseline")
    _set(engine, admin, "race", "black")
    with uow(engine) as session:
        phenotypes.set_value(
            session, actor=admin, participant="SLE-0002", variable="race", value="white"
        )


def _tube(session, admin, visit, collected, **kwargs):
    return accession_tube(
        session, admin, visit=visit, quantity=1000, collected_at=collected, **kwargs
    )


WANTED = ("race", "sledai2k", "c3", "anti_dsdna", "pga")


def _at(engine, tubes, window_days=DEFAULT_WINDOW_DAYS):
    with uow(engine, readonly=True) as session:
        variables = session.exec(
            select(PhenotypeVariable).where(PhenotypeVariable.name.in_(WANTED))
        ).all()
        ids = {t.id: t.accession_id for t in tubes}
        rows = session.execute(collection_dates_query().where(Specimen.id.in_(list(ids))))
        found = values_at_collection(
            session,
            specimens=[Collected.of(r) for r in rows],
            variables=variables,
            window_days=window_days,
        )
    return {ids[i]: values for i, values in found.items()}


def test_values_at_collection(engine, admin):
    _visits_and_values(engine, admin)
    with uow(engine) as session:
        month3 = _tube(session, admin, "month 3", _local(date(2025, 4, 1)))
        # drawn after month 1's visit, but its own visit (baseline) has a value: that wins
        late_baseline = _tube(session, admin, "baseline", _local(date(2025, 2, 5)))
        month1 = _tube(session, admin, "month 1", _local(date(2025, 2, 1), hour=23))
        month9 = _tube(session, admin, "month 9", None)  # no time: the visit's date counts
        no_visit = _tube(session, admin, None, _local(date(2025, 2, 10)))
        aliquots = lineage.aliquot(
            session, actor=admin, parent=month3.accession_id, count=2, volume=100
        )
        other = accession_tube(
            session, admin, "SLE-0002", quantity=100, collected_at=_local(date(2025, 4, 1))
        )
    tubes = [month3, late_baseline, month1, month9, no_visit, *aliquots, other]
    found = _at(engine, tubes)
    # month 3: its own C3; SLEDAI from month 1 (59 days before); anti-dsDNA from 89 days before
    assert found[month3.accession_id] == {
        "race": "black",
        "sledai2k": 6,
        "c3": 80.0,
        "anti_dsdna": 30.0,
    }
    assert found[late_baseline.accession_id] == {"race": "black", "sledai2k": 4, "anti_dsdna": 30.0}
    # a value observed after collection never counts
    assert found[month1.accession_id] == {"race": "black", "sledai2k": 6, "anti_dsdna": 30.0}
    # month 9 is 242 days after month 1: outside the window, so absent
    assert found[month9.accession_id] == {"race": "black"}
    assert found[no_visit.accession_id] == {"race": "black", "sledai2k": 6, "anti_dsdna": 30.0}
    for aliquot in aliquots:
        assert found[aliquot.accession_id] == found[month3.accession_id]
    assert found[other.accession_id] == {"race": "white"}
    # the window is configurable, inclusive at its edge
    assert "anti_dsdna" not in _at(engine, [month3], window_days=88)[month3.accession_id]
    assert _at(engine, [month3], window_days=89)[month3.accession_id]["anti_dsdna"] == 30.0
    assert _at(engine, [month9], window_days=365)[month9.accession_id]["sledai2k"] == 6
    assert _at(engine, [month3], window_days=0)[month3.accession_id] == {
        "race": "black",
        "c3": 80.0,
    }


def test_one_specimens_phenotype_by_accession(engine, admin):
    _visits_and_values(engine, admin)
    with uow(engine) as session:
        month3 = _tube(session, admin, "month 3", _local(date(2025, 4, 1)))
        aliquot = lineage.aliquot(
            session, actor=admin, parent=month3.accession_id, count=1, volume=100
        )[0]
        at_default = phenotype_at_collection.specimen_phenotypes(
            session, actor=admin, accession=aliquot.accession_id
        )
        narrow = phenotype_at_collection.specimen_phenotypes(
            session, actor=admin, accession=month3.accession_id, window_days=30
        )
        with pytest.raises(ValidationError) as negative:
            phenotype_at_collection.specimen_phenotypes(
                session, actor=admin, accession=month3.accession_id, window_days=-1
            )
        with pytest.raises(NotFound):
            phenotype_at_collection.specimen_phenotypes(session, actor=admin, accession="SLE-NOPE")
    assert at_default == {"race": "black", "sledai2k": 6, "c3": 80.0, "anti_dsdna": 30.0}
    assert narrow == {"race": "black", "c3": 80.0}
    assert negative.value.field == "window_days"


def test_collection_falls_back_to_the_visit_date_then_receipt(engine, admin):
    _visits_and_values(engine, admin)
    with uow(engine) as session:
        drawn = _tube(session, admin, "month 3", _local(date(2025, 3, 30), hour=8))
        by_visit = _tube(session, admin, "month 3", None)
        received = _tube(session, admin, None, None, received_at=_local(date(2025, 2, 3)))
        rows = session.execute(
            collection_dates_query().where(Specimen.id.in_([drawn.id, by_visit.id, received.id]))
        ).all()
    days = {c.specimen_id: c.collected_on for c in map(Collected.of, rows)}
    assert days == {
        drawn.id: date(2025, 3, 30),
        by_visit.id: date(2025, 4, 1),
        received.id: date(2025, 2, 3),
    }
