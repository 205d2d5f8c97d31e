"""Selecting a cohort through the real services on both engines: filters, phenotypes at
collection and ever, consent exclusions counted by reason, and saved queries."""

from datetime import date

import pytest
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.cohort import CohortQuery, parse_conditions
from biobank.domain.vocabulary import Role
from biobank.errors import AlreadyExists, NotFound, PermissionDenied, ValidationError
from biobank.services import cohort_counts, cohorts, participants, saved_queries


def _select(engine, actor, *, uses=("GENETIC",), as_of=date(2026, 1, 1), window=90, **query):
    with uow(engine, readonly=True) as session:
        tally = cohorts.Tally()
        rows = list(
            cohorts.select_cohort(
                session, query=CohortQuery(**query), uses=list(uses), as_of=as_of,
                window_days=window, tally=tally,
            )
        )  # fmt: skip
        codes = {
            r.specimen_id: participants.show_participant(
                session, actor=actor, code=_code(session, r.participant_id)
            ).code
            for r in rows
        }
    return rows, codes, tally


def _code(session, participant_id):
    from biobank.models import Participant

    return session.get(Participant, participant_id).code


def test_the_pi_question_selects_and_counts_consent_exclusions(cohort_db, admin):
    where = parse_conditions("ln_class in (III, IV) and upcr >= 0.25")
    rows, codes, tally = _select(cohort_db, admin, specimen_types=["SER"], phenotypes=where)
    # P-0001 baseline (IV, 0.6); P-0003 refused GENETIC; P-0004 withdrew; month 6 of P-0001
    # has upcr 0.2 and no biopsy within the window (the baseline is 184 days before).
    assert sorted(codes.values()) == ["P-0001"]
    assert tally.matched_before_consent == 3
    assert tally.exclusions() == {
        "GENETIC refused": {"specimens": 1, "participants": 1},
        "GENETIC withdrawn": {"specimens": 1, "participants": 1},
    }
    assert rows[0].phenotypes["ln_class"] == "IV" and rows[0].phenotypes["upcr"] == 0.6
    assert rows[0].age_at_collection == 40


def test_a_wider_window_carries_an_earlier_value_to_a_later_collection(cohort_db, admin):
    where = parse_conditions("ln_class = IV")
    narrow, _, _ = _select(cohort_db, admin, phenotypes=where, window=90)
    wide, _, _ = _select(cohort_db, admin, phenotypes=where, window=200)
    assert len(narrow) == 1 and len(wide) == 2


def test_ever_looks_at_every_visit(cohort_db, admin):
    at_collection, _, _ = _select(cohort_db, admin, phenotypes=parse_conditions("ln_class = V"))
    _, codes, _ = _select(cohort_db, admin, phenotypes=parse_conditions("ever(ln_class = V)"))
    assert len(at_collection) == 1 and sorted(codes.values()) == ["P-0005", "P-0005"]


def test_specimen_and_participant_filters(cohort_db, admin):
    def count(**query):
        return len(_select(cohort_db, admin, uses=("FUTURE_RESEARCH",), **query)[0])

    assert count() == 8  # P-0004's two tubes are left out (withdrawn)
    assert count(max_freeze_thaws=1) == 4
    assert count(min_quantity=501) == 0
    assert count(sex=["male"]) == 2
    assert count(min_age=60) == 2  # P-0003, born 1950, 70 at collection
    assert count(max_age=25) == 2  # P-0005, born 2000
    assert count(collected_from=date(2020, 6, 1)) == 4
    assert count(statuses=["checked_out"]) == 0
    assert count(phenotypes=parse_conditions("sledai2k exists")) == 1


def test_consent_as_of_a_date_before_the_withdrawal_includes_it(cohort_db, admin):
    _, codes, tally = _select(cohort_db, admin, uses=("FUTURE_RESEARCH",), as_of=date(2020, 12, 31))
    assert "P-0004" in codes.values() and tally.exclusions() == {}


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("no_such_variable = 1", "where"),
        ("ln_class in (IX)", "where"),
        ("upcr >= high", "where"),
        ("ln_class > III", "where"),
    ],
)
def test_a_bad_condition_is_refused_naming_it(cohort_db, admin, where, field):
    with pytest.raises((ValidationError, NotFound)) as caught:
        _select(cohort_db, admin, phenotypes=parse_conditions(where))
    assert caught.value.field == field


def test_a_bad_use_or_filter_is_refused(cohort_db, admin):
    with pytest.raises(ValidationError, match="unknown use"):
        _select(cohort_db, admin, uses=("TELEPATHY",))
    with pytest.raises(ValidationError, match="not a status"):
        _select(cohort_db, admin, statuses=["lost"])
    with pytest.raises(ValidationError, match="unknown specimen type"):
        _select(cohort_db, admin, specimen_types=["BLOOD"])
    with pytest.raises(NotFound):
        _select(cohort_db, admin, storage="NOPE")


def test_preview_and_saved_queries(cohort_db, actors):
    pi, technician = actors[Role.pi], actors[Role.technician]
    query = CohortQuery(phenotypes=parse_conditions("upcr >= 0.25"))
    with uow(cohort_db) as session:
        preview = cohort_counts.preview_cohort(session, actor=pi, query=query, uses=["genetic"])
        saved_queries.save_query(session, actor=pi, name="proteinuria", query=query)
    assert (preview.specimens, preview.participants, preview.excluded_by_consent) == (2, 2, 2)
    assert preview.uses == ["GENETIC"]
    with pytest.raises(AlreadyExists), uow(cohort_db) as session:
        saved_queries.save_query(session, actor=pi, name="proteinuria", query=CohortQuery())
    with uow(cohort_db) as session:
        saved_queries.save_query(
            session, actor=pi, name="proteinuria", query=CohortQuery(), replace=True
        )
        kept = saved_queries.list_saved_queries(session, actor=pi)
    assert [(k.name, k.query, k.created_by) for k in kept] == [
        ("proteinuria", CohortQuery(), pi.username)
    ]
    with pytest.raises(PermissionDenied), uow(cohort_db, readonly=True) as session:
        cohort_counts.preview_cohort(session, actor=technician, query=query, uses=["GENETIC"])


def test_cli_preview_save_and_run_saved(cohort_db, db_url, monkeypatch):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", str(cohort_db.url.render_as_string(False)))
    runner = CliRunner()
    where = "ln_class in (III, IV) and upcr >= 0.25"
    saved = runner.invoke(
        app, ["-u", "admin", "cohort", "save", "ln", "--type", "SER", "--where", where]
    )
    assert saved.exit_code == 0, saved.output
    shown = runner.invoke(app, ["-u", "admin", "cohort", "preview", "--saved", "ln", "--use",
                                "GENETIC", "--json"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    import json

    assert json.loads(shown.stdout)["specimens"] == 1
    bad = runner.invoke(app, ["-u", "admin", "cohort", "preview", "--where", "upcr >>= 1"])
    assert bad.exit_code == 2 and "upcr" in bad.stderr
