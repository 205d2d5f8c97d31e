"""The database narrows a cohort by its phenotype conditions before Python judges them, and
never changes what a cohort is: every kind of condition (numbers, choices, dates, yes/no,
text, exists, in and not in, !=, ever, nested and/or) selects exactly what it did without the
narrowing, on both engines."""

from __future__ import annotations

from datetime import date

import pytest

from biobank.db import uow
from biobank.domain.cohort import CohortQuery, parse_conditions
from biobank.domain.vocabulary import Role
from biobank.services import cohorts, phenotype_variables, phenotypes

CONDITIONS = [
    "upcr >= 0.5",
    "upcr != 0.3",
    "upcr < 0.25",
    "ln_class = IV",
    "ln_class != III",
    "ln_class in (III, IV)",
    "ln_class not in (II)",
    "ln_class exists",
    "sledai2k > 4 or upcr < 0.5",
    "(ln_class = V or upcr >= 1) and ethnicity exists",
    "ever(upcr >= 1)",
    "ever(ln_class = II) and upcr exists",
    "dx_date < 2019-01-01",
    "dx_date >= 2019-01-01 or anti_sm = no",
    "anti_sm = yes",
    "cart_product = tisacel",
    "cart_product != tisacel and upcr exists",
]


def _selected(engine, where: str) -> list[int]:
    with uow(engine, readonly=True) as session:
        query = CohortQuery(phenotypes=parse_conditions(where))
        return sorted(
            s.specimen_id
            for s in cohorts.select_cohort(
                session, query=query, uses=["FUTURE_RESEARCH"], as_of=date.today()
            )
        )


@pytest.fixture
def varied(cohort_db, actors):
    """The cohort, with dates, yes/no and text values besides."""
    admin = actors[Role.admin]
    given = [
        ("P-0001", "dx_date", "2018-05-01", None), ("P-0002", "dx_date", "2020-02-02", None),
        ("P-0001", "anti_sm", "yes", "baseline"), ("P-0002", "anti_sm", "no", "month 6"),
        ("P-0003", "cart_product", "tisacel", None), ("P-0005", "cart_product", "axicel", None),
    ]  # fmt: skip
    with uow(cohort_db) as session:
        for code, variable, value, visit in given:
            phenotypes.set_value(session, actor=admin, participant=code, variable=variable,
                                 value=value, visit=visit)  # fmt: skip
        known = set(phenotype_variables.variables_by_name(session))
    return cohort_db, known


@pytest.mark.parametrize("where", CONDITIONS)
def test_the_narrowing_changes_no_cohort(varied, monkeypatch, where):
    engine, known = varied
    names = parse_conditions(where).variables()
    if not names <= known:
        pytest.skip(f"the dictionary has no {sorted(names - known)}")
    narrowed = _selected(engine, where)
    monkeypatch.setattr(cohorts, "narrowing", lambda *_: None)
    assert narrowed == _selected(engine, where)
